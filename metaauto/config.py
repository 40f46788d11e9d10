"""Where metaauto keeps things on disk.

Everything lives under one project home (``METAAUTO_HOME``, default ``~/.metaauto``) so that caches,
checkpoints and, later, the MLflow and Optuna stores never depend on the current working directory.
Datasets are read from a data directory that is always configurable (``--data-dir`` or
``METAAUTO_DATA_DIR``): metaauto never assumes where a copy of a dataset lives.
"""

from __future__ import annotations

import os
from pathlib import Path

from metaauto.errors import CollectionError

#: the Optuna storage every search, worker and dashboard of a deployment shares (``metaauto stack env`` sets it)
SEARCH_STORAGE_ENV = "METAAUTO_SEARCH_STORAGE"


def home_dir() -> Path:
    """The project home; created on first use."""
    path = Path(os.environ.get("METAAUTO_HOME", Path.home() / ".metaauto")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def home_subdir(*parts: str) -> Path:
    """``<home>/<parts...>`` (the servers', the stack's, the search's ...); created on first use."""
    path = home_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Decoded datasets and other derived files that can be rebuilt from their sources.

    ``METAAUTO_CACHE_DIR`` moves it out of the home, so that throw-away homes (tests, CI) can still share
    one decoded copy of a dataset.
    """
    override = os.environ.get("METAAUTO_CACHE_DIR")
    path = Path(override).expanduser().resolve() if override else home_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory: an explicit argument wins over ``METAAUTO_DATA_DIR``.

    Raises a :class:`CollectionError` naming both sources when neither is given, rather than guessing a
    path that happens to exist on the developer's machine.
    """
    value = explicit if explicit is not None else os.environ.get("METAAUTO_DATA_DIR")
    if value is None:
        raise CollectionError(
            "no data directory: pass data_dir=... (CLI: --data-dir DIR) or set METAAUTO_DATA_DIR"
        )
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise CollectionError(f"data directory {path} does not exist or is not a directory")
    return path
