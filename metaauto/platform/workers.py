"""What the platform knows about the workers that run searches' trials, without importing them.

Two kinds (see :mod:`metaauto.platform.stack`): long-lived Prefect *task workers* (``python -m
flows.task_worker``) serving the ``search-worker`` task, and Prefect *process workers* on a work pool. The
flows (``flows/worker.py``, ``flows/task_worker.py``) import the names below from here, so both sides of
the protocol share one definition:

* :data:`TASK_STORAGE_BLOCK`: the block a background task run's parameters travel through;
* :data:`PRESENCE_KEY`: the task key every metaauto task worker subscribes to, busy or not (no run is
  ever submitted under it), so :func:`task_workers` lists the live ones;
* the commands that start each kind, and the environment they (and every flow run they start) get.
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from metaauto.config import SEARCH_STORAGE_ENV
from metaauto.platform.deployments import checkout
from metaauto.platform.process import console_script
from metaauto.platform.servers import server_env

#: the block both sides of a background task run read its parameters from (``metaauto stack up`` creates it:
#: a local directory; machines that do not share a filesystem point a remote-file-system block of this name at S3)
TASK_STORAGE_BLOCK = "local-file-system/metaauto-task-runs"
#: the key every metaauto task worker subscribes to, busy or not: ``/task_workers/filter`` with it lists them
PRESENCE_KEY = "metaauto-task-worker-presence"
#: workers poll for scheduled flow runs this often (Prefect's default is 10 s, which a short search pays for)
WORKER_QUERY_SECONDS = 2
KINDS = ("tasks", "pool")


@dataclass
class WorkerInfo:
    """A worker the stack started: ``kind`` is ``tasks`` (a task worker) or ``pool`` (a process worker)."""

    name: str
    kind: str
    pid: int
    log: str

    @property
    def online_key(self) -> str:
        """How it appears in :func:`online_workers` (a task worker names itself ``host-pid``)."""
        return f"{socket.gethostname()}-{self.pid}" if self.kind == "tasks" else self.name


@contextmanager
def prefect_client(api: str) -> Iterator[Any]:
    """A synchronous Prefect client for the server at ``api``."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        yield client


def task_workers(client: Any) -> list[str]:
    """Identifiers (``host-pid``) of the live metaauto task workers on this Prefect server, busy or idle."""
    response = client.request("POST", "/task_workers/filter", json={"task_worker_filter": {"task_keys": [PRESENCE_KEY]}})
    return sorted(w["identifier"] for w in response.json())


def online_workers(api: str, pool: str) -> list[str]:
    """Names of the process workers on ``pool`` and ``host-pid`` of the task workers serving ``search-worker``."""
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus

    with prefect_client(api) as client:
        workers = client.read_workers_for_work_pool(pool, worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"])),
                                                    offset=0, limit=200)  # None is refused by the server (422)
        serving = task_workers(client)
    return sorted(w.name for w in workers) + serving


def worker_command(pool: str, name: str, slots: int) -> list[str]:
    """A Prefect process worker on ``pool`` (every flow run it takes is a new process)."""
    return [console_script("prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", name,
            "--limit", str(slots)]


def task_worker_command(slots: int) -> list[str]:
    """A long-lived task worker serving ``search-worker`` (``slots`` worker runs at once, in threads)."""
    return [sys.executable, "-m", "flows.task_worker", "--slots", str(slots)]


def command(kind: str, slots: int, pool: str, name: str) -> list[str]:
    if kind not in KINDS:
        raise ValueError(f"worker kind {kind!r} is neither 'tasks' nor 'pool'")
    return task_worker_command(slots) if kind == "tasks" else worker_command(pool, name, slots)


def worker_env(prefect_api: str, mlflow_url: str, optuna_db: str, prefect_home: Path) -> dict[str, str]:
    """The environment of a worker (and so of every flow run it starts): the three URLs and this checkout."""
    root = str(checkout())
    env = server_env()
    env.update({
        "PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": mlflow_url, SEARCH_STORAGE_ENV: optuna_db,
        "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
        "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PREFECT_HOME": str(prefect_home),
    })
    return env


__all__ = [
    "KINDS", "PRESENCE_KEY", "SEARCH_STORAGE_ENV", "TASK_STORAGE_BLOCK", "WORKER_QUERY_SECONDS", "WorkerInfo",
    "command", "online_workers", "prefect_client", "task_worker_command", "task_workers", "worker_command",
    "worker_env",
]
