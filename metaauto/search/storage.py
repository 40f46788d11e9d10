"""Where a study lives, and the one rule that picks it (:func:`resolve_storage_url`).

* default: ``METAAUTO_SEARCH_STORAGE`` when set (``metaauto stack env`` exports it), else SQLite under the project home (``<home>/search/optuna.db``), for one process;
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
import os
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from metaauto.config import SEARCH_STORAGE_ENV, home_dir
from metaauto.search.space import SearchError

HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 120
#: the study storage every process of a deployment shares (the CLI, the flows, the workers, the dashboard)
STORAGE_ENV = SEARCH_STORAGE_ENV


def search_dir() -> Path:
    path = home_dir() / "search"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_storage_url() -> str:
    return f"sqlite:///{search_dir() / 'optuna.db'}"


def resolve_storage_url(url: str | None = None, *, study_name: str | None = None, parallel: bool = False) -> str:
    """The storage a search uses: ``url`` if given, else ``$METAAUTO_SEARCH_STORAGE``, else -- SQLite being unsafe
    for parallel writers -- a journal file per study when trials run ``parallel`` in several processes or
    threads, else the project's SQLite file."""
    if url:
        return url
    shared = os.environ.get(STORAGE_ENV, "").strip()
    if shared:
        return shared
    if parallel:
        if not study_name:
            raise SearchError("a parallel search's default journal storage is named after its study: name the study")
        return f"journal:{search_dir() / (study_name + '.journal')}"
    return default_storage_url()


def is_shared(url: str | None) -> bool:
    """Whether other processes may be running trials of the same study (journal file or a server database)."""
    return url is not None and not url.startswith("sqlite:")


def database_url(url: str) -> str:
    """``url`` as SQLAlchemy should open it: ``postgresql://`` with the driver that is installed (SQLAlchemy 2.1
    assumes psycopg 3 for a bare ``postgresql://``, while many installs only have psycopg2)."""
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
            database_url(url), heartbeat_interval=heartbeat_interval, grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    except Exception as exc:  # SQLAlchemy's OperationalError, ArgumentError, missing driver ...
        raise SearchError(f"cannot open study storage {url}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial ``number`` of ``study_name``, through the storage's public lookups.

    Optuna exposes a trial's id only as the private ``Trial._trial_id``/``FrozenTrial._trial_id``; the
    storage methods used here are public, so this is the one place metaauto asks for an id (heartbeats
    are recorded by id, and a trial asked in one process is re-opened by id in another).
    """
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)
