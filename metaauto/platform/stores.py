"""The scale-out stack's stores: three PostgreSQL databases (MLflow's, Prefect's, the Optuna studies').

* ``METAAUTO_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``): the server the
  databases ``<prefix>_mlflow``, ``<prefix>_prefect`` and ``<prefix>_optuna`` are created on;
* ``METAAUTO_STACK_MLFLOW_DB``, ``METAAUTO_STACK_PREFECT_DB``, ``METAAUTO_SEARCH_STORAGE``: full URLs
  that replace those defaults one by one (used as given, not created).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlparse, urlunparse

from metaauto.platform.servers import ServerError
from metaauto.platform.workers import SEARCH_STORAGE_ENV
from metaauto.urls import redact

POSTGRES_ENV = "METAAUTO_POSTGRES_URL"
MLFLOW_DB_ENV = "METAAUTO_STACK_MLFLOW_DB"
PREFECT_DB_ENV = "METAAUTO_STACK_PREFECT_DB"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_PREFIX = "metaauto"


class StackError(ServerError):
    """The stack cannot be started, reached or stopped (PostgreSQL down, port taken, a process that will not die)."""


def _database_url(server: str, database: str) -> str:
    return urlunparse(urlparse(server)._replace(path=f"/{database}"))


def _with_scheme(url: str, scheme: str) -> str:
    return scheme + url[url.index("://"):]


@dataclass
class StackSettings:
    """Where the stack's stores live: the PostgreSQL URL each consumer gets (``postgresql://`` form)."""

    postgres: str
    mlflow_db: str
    prefect_db: str
    optuna_db: str
    create: tuple[str, ...] = ()  # databases stack up creates when missing (those derived from ``postgres``)

    def __post_init__(self) -> None:
        self.create = tuple(self.create)  # a list when read back from JSON

    @classmethod
    def resolve(cls, postgres: Optional[str] = None, prefix: str = DEFAULT_PREFIX) -> "StackSettings":
        """An explicit ``postgres`` wins over ``METAAUTO_POSTGRES_URL``; each ``*_DB`` variable over its derived default."""
        server = postgres or os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES
        if urlparse(server).scheme.split("+")[0] not in ("postgresql", "postgres"):
            raise StackError(f"the stack needs PostgreSQL; {POSTGRES_ENV} / --postgres is {redact(server)!r}")
        derived = {kind: f"{prefix}_{kind}" for kind in ("mlflow", "prefect", "optuna")}
        explicit = {"mlflow": os.environ.get(MLFLOW_DB_ENV), "prefect": os.environ.get(PREFECT_DB_ENV),
                    "optuna": os.environ.get(SEARCH_STORAGE_ENV)}
        urls = {kind: explicit[kind] or _database_url(server, derived[kind]) for kind in derived}
        create = tuple(derived[kind] for kind in derived if not explicit[kind])
        return cls(postgres=server, mlflow_db=urls["mlflow"], prefect_db=urls["prefect"], optuna_db=urls["optuna"],
                   create=create)

    @property
    def mlflow_backend(self) -> str:
        return _with_scheme(self.mlflow_db, "postgresql+psycopg2")

    @property
    def prefect_backend(self) -> str:
        return _with_scheme(self.prefect_db, "postgresql+asyncpg")

    def redacted(self) -> dict[str, str]:
        """The three stores' URLs as ``stack status`` shows them."""
        return {"mlflow_db": redact(self.mlflow_db), "prefect_db": redact(self.prefect_db), "optuna_db": redact(self.optuna_db)}


def connect(url: str) -> Any:
    """A psycopg2 connection to ``url``; a :class:`StackError` naming the server when it is not reachable."""
    import psycopg2

    try:
        return psycopg2.connect(_with_scheme(url, "postgresql"), connect_timeout=5)
    except psycopg2.Error as exc:
        raise StackError(f"PostgreSQL at {redact(url)} is not reachable: {str(exc).strip().splitlines()[0]}; "
                         f"start it or point {POSTGRES_ENV} (or --postgres) at one") from None


def ensure_databases(settings: StackSettings) -> list[str]:
    """Create the stack's databases that do not exist yet; returns the ones created."""
    created = []
    connection = connect(settings.postgres)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for name in settings.create:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
                    created.append(name)
    finally:
        connection.close()
    for url in (settings.mlflow_db, settings.prefect_db, settings.optuna_db):
        connect(url).close()  # an explicit URL that is wrong fails here, naming itself
    return created


def drop_databases(settings: StackSettings) -> list[str]:
    """Drop the databases the stack derives from ``postgres`` (tests, ``stack down --drop``); ends their sessions first."""
    dropped = []
    connection = connect(settings.postgres)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for name in settings.create:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                               (name,))
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
                dropped.append(name)
    finally:
        connection.close()
    return dropped
