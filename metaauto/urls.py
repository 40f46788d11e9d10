"""URLs of the stores and servers metaauto talks to, as they may be shown to people."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """``url`` with its password masked (``postgresql://user:***@host/db``), for logs, reports and MLflow
    parameters. The user and host stay: they say which server and which role. Anything that is not a URL
    with a password (a path, ``journal:PATH``, ``sqlite:///...``) comes back unchanged."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL urllib can split (an invalid port, say): mask everything before '@'
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if sep and "@" in rest else url
    if password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
