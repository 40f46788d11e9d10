"""Where a study lives.

* default: SQLite under the project home (``<home>/search/optuna.db``), for one process;
* ``journal`` or ``journal:PATH``: Optuna's append-only JournalStorage file (default
  ``<home>/search/journal.log``), which several processes on one machine can share safely. It has no
  heartbeats, so a trial whose process was killed stays RUNNING (it no longer counts towards the
  budget); use a database when workers may die;
* any SQLAlchemy URL (``postgresql://postgres@127.0.0.1:5432/test``): a database that worker processes
  on any machine join. Trials there send heartbeats; a trial whose worker died (no heartbeat for
  ``grace_period`` seconds) is failed and re-queued once by
  :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` the next time any worker asks for a trial.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from metaauto.config import home_dir
from metaauto.search.space import SearchError

HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120


def search_dir() -> Path:
    path = home_dir() / "search"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_storage_url() -> str:
    return f"sqlite:///{search_dir() / 'optuna.db'}"


def is_shared(url: str | None) -> bool:
    """Whether other processes may be running trials of the same study (journal file or a server database)."""
    return url is not None and not url.startswith("sqlite:")


def redact(url: str) -> str:
    """``url`` without its user and password, for logs, MLflow parameters and reports."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


def _with_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 assumes psycopg 3 for a bare
    ``postgresql://``, while many installs only have psycopg2."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2{sep}{rest}"
    return url


def open_storage(url: str | None = None, heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
                 grace_period: int = GRACE_PERIOD_S) -> optuna.storages.BaseStorage:
    """The storage behind ``url`` (see the module docstring)."""
    url = url or default_storage_url()
    if url == "journal" or url.startswith("journal:"):
        path = Path(url.partition(":")[2] or search_dir() / "journal.log").expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:"):
        return RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    if "://" not in url:
        raise SearchError(f"storage {url!r} is neither 'journal[:PATH]' nor a database URL such as postgresql://user@host/db")
    try:
        return RDBStorage(
            _with_driver(url), heartbeat_interval=heartbeat_interval, grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    except Exception as exc:  # SQLAlchemy's OperationalError, ArgumentError, missing driver ...
        raise SearchError(f"cannot open study storage {url}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
