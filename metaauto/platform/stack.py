"""The local scale-out stack: MLflow and Prefect on PostgreSQL, long-lived task workers, a process work pool.

``metaauto server`` (:mod:`metaauto.platform.servers`) runs the two servers on SQLite for one user on one
machine. The stack is what several processes -- and several machines -- share: every store is a PostgreSQL
database (:mod:`metaauto.platform.stores`), so MLflow's tracking store, Prefect's orchestration database
and the Optuna study all accept concurrent writers, and a worker on another machine needs nothing but three
URLs:

* ``MLFLOW_TRACKING_URI``: the MLflow server (``--serve-artifacts``: clients upload artifacts through it,
  so a remote worker needs no shared filesystem);
* ``PREFECT_API_URL``: the Prefect server the workers subscribe to or poll;
* ``METAAUTO_SEARCH_STORAGE``: the Optuna storage the workers join.

``stack up`` creates the databases when missing, starts both servers detached, and then two kinds of
workers (:mod:`metaauto.platform.workers`):

* ``workers`` **task workers** (``python -m flows.task_worker``): long-lived Prefect task workers serving
  the ``search-worker`` task. ``search-learners`` with ``workers > 0`` (and the default
  ``dispatch="task-workers"``) submits that many background runs of it; each joins the study and pulls
  trials until the study has its trials. The process imported PyTorch, MLflow and the data once, so a
  search pays no start-up: this is the throughput path. Their parameters travel through the block
  ``local-file-system/metaauto-task-runs`` (a directory under the stack; other machines need a shared or
  remote-file-system block of that name).
* ``pool_workers`` **process workers** on the process work pool, with the ``search-worker/scaleout``
  deployment (the same loop as a flow, ``dispatch="deployment"``; :mod:`metaauto.platform.deployments`) and
  any other flow deployed there: every flow run is a new process, the model of a Kubernetes work pool where
  each run is a pod with a GPU.

State (:class:`StackState`), logs and served artifacts live under ``<home>/stack``. ``stack down`` ends
every process the stack started *and their descendants* (:func:`metaauto.platform.process.stop_trees`),
then checks that none is left and that the ports are free.
"""

from __future__ import annotations

import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from metaauto.config import home_subdir
from metaauto.platform import servers
from metaauto.platform.deployments import DEFAULT_POOL, apply_worker_deployment
from metaauto.platform.process import (
    alive,
    descendants,
    healthy,
    load_record,
    port_free,
    port_released,
    save_record,
    spawn,
    stop_trees,
    wait_until,
)
from metaauto.platform.servers import DEFAULT_HOST, ServerInfo
from metaauto.platform.stores import (
    DEFAULT_POSTGRES,
    DEFAULT_PREFIX,
    POSTGRES_ENV,
    StackError,
    StackSettings,
    connect,
    drop_databases,
    ensure_databases,
)
from metaauto.platform.workers import (
    SEARCH_STORAGE_ENV,
    TASK_STORAGE_BLOCK,
    WorkerInfo,
    command,
    online_workers,
    prefect_client,
    worker_env,
)

DEFAULT_STACK_PREFECT_PORT = 4200
DEFAULT_STACK_MLFLOW_PORT = 5000
#: version of ``stack.json``; files without one (metaauto before the platform package) are read and upgraded
STATE_FORMAT = 2


def stack_dir() -> Path:
    return home_subdir("stack")


def _state_path() -> Path:
    return stack_dir() / "stack.json"


@dataclass
class StackState:
    """``<home>/stack/stack.json``: what ``up`` started, read by ``status``, ``add-workers`` and ``down``."""

    host: str
    prefect: ServerInfo
    mlflow: ServerInfo
    workers: list[WorkerInfo]
    pool: str
    deployment: str
    settings: StackSettings
    slots: int = 1
    gpus: int = 0
    gpu_limit: str = "gpu"
    started_at: float = field(default_factory=time.time)
    format: int = STATE_FORMAT

    @property
    def prefect_api(self) -> str:
        return self.prefect.api_url

    @property
    def mlflow_url(self) -> str:
        return self.mlflow.url

    def env(self) -> dict[str, str]:
        """What a client or a worker on any machine sets to use this stack."""
        return {"PREFECT_API_URL": self.prefect_api, "MLFLOW_TRACKING_URI": self.mlflow_url,
                SEARCH_STORAGE_ENV: self.settings.optuna_db}

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers] + [self.prefect.pid, self.mlflow.pid]

    def stack_settings(self) -> StackSettings:
        return self.settings

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StackState":
        data = dict(data)
        if data.get("format") is None:  # the first format: nested dicts, slots/gpus inside settings
            settings = dict(data["settings"])
            for key in ("slots", "gpus", "gpu_limit"):
                if key in settings:
                    data[key] = settings.pop(key)
            data["settings"] = settings
            data["workers"] = [{**w, "kind": w.get("kind", "pool")} for w in data["workers"]]
            data["format"] = STATE_FORMAT
        if data["format"] != STATE_FORMAT:
            raise StackError(f"{_state_path()} has format {data['format']}, this metaauto reads {STATE_FORMAT}")
        return cls(**{**data, "prefect": ServerInfo(**data["prefect"]), "mlflow": ServerInfo(**data["mlflow"]),
                      "workers": [WorkerInfo(**w) for w in data["workers"]], "settings": StackSettings(**data["settings"])})


def read_state() -> Optional[StackState]:
    data = load_record(_state_path())
    if data is None:
        return None
    try:
        return StackState.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise StackError(f"{_state_path()} is not a stack state this metaauto can read ({exc}); stop its processes "
                         "by hand and delete it") from None


def _write_state(state: StackState) -> None:
    save_record(_state_path(), state)  # owner-only: the database URLs may carry passwords


def configure_prefect(api: str, pool: str, gpus: int = 0, gpu_limit: str = "gpu") -> str:
    """Create the process pool, the GPU global concurrency limit (``gpus`` slots), the task runs' storage
    block and the ``search-worker/scaleout`` deployment; returns the deployment's name."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.filesystems import LocalFileSystem
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with prefect_client(api) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                                   description="metaauto trials: one search-worker flow run per slot"))
        except ObjectAlreadyExists:
            pass
        if gpus:
            client.upsert_global_concurrency_limit_by_name(gpu_limit, gpus)
    storage = home_subdir("stack", "task-runs")
    with temporary_settings(updates={PREFECT_API_URL: api}):
        LocalFileSystem(basepath=str(storage)).save(TASK_STORAGE_BLOCK.split("/", 1)[1], overwrite=True)
    from prefect.exceptions import MissingFlowError, ScriptError

    try:
        return apply_worker_deployment(api, pool)
    except (ScriptError, MissingFlowError) as exc:
        raise StackError(f"cannot load the search-worker flow ({exc}); run from the repository root") from exc


def start_workers(state: StackState, count: int, slots: int = 1, first: int = 0, prefix: Optional[str] = None,
                  wait: float = 90.0, kind: str = "tasks") -> list[WorkerInfo]:
    """Start ``count`` detached workers of ``kind`` (``tasks``: task workers, ``pool``: process workers on the
    stack's pool); returns them once all are online."""
    env = worker_env(state.prefect_api, state.mlflow_url, state.settings.optuna_db, home_subdir("stack", "prefect"))
    prefix = prefix or socket.gethostname().split(".")[0]
    label = "worker" if kind == "tasks" else "pool-worker"
    started: list[WorkerInfo] = []
    try:
        for index in range(first, first + count):
            name, log = f"{prefix}-{label}-{index}", stack_dir() / f"{label}-{index}.log"
            pid = spawn(command(kind, slots, state.pool, name), env, log, cwd=stack_dir())
            started.append(WorkerInfo(name=name, kind=kind, pid=pid, log=str(log)))
        keys = {w.online_key for w in started}
        wait_until(lambda: keys <= set(online_workers(state.prefect_api, state.pool)), wait,
                   f"{label}s {sorted(w.name for w in started)} online", [w.pid for w in started],
                   started[0].log if started else "")
    except ValueError as exc:
        raise StackError(str(exc)) from None
    except BaseException:
        stop_trees([w.pid for w in started])
        raise
    return started


def _start_servers(settings: StackSettings, host: str, prefect_port: int, mlflow_port: int) -> list[ServerInfo]:
    artifacts = home_subdir("stack", "artifacts")
    commands = {
        "prefect": servers.prefect_server(host, prefect_port, home_subdir("stack", "prefect"), settings.prefect_backend),
        "mlflow": servers.mlflow_server(host, mlflow_port, settings.mlflow_backend, artifacts.as_uri(), serve_artifacts=True),
    }
    ports = {"prefect": prefect_port, "mlflow": mlflow_port}
    return [servers.launch(name, cmd, env, host, ports[name], stack_dir()) for name, (cmd, env) in commands.items()]


def up(
    workers: int = 2,
    pool_workers: int = 1,
    postgres: Optional[str] = None,
    prefix: str = DEFAULT_PREFIX,
    host: str = DEFAULT_HOST,
    prefect_port: int = DEFAULT_STACK_PREFECT_PORT,
    mlflow_port: int = DEFAULT_STACK_MLFLOW_PORT,
    pool: str = DEFAULT_POOL,
    slots: int = 1,
    gpus: int = 0,
    gpu_limit: str = "gpu",
    timeout: float = 180.0,
) -> StackState:
    """Bring the stack up (see the module docstring); on any failure everything started is stopped again."""
    current = read_state()
    if current is not None and any(alive(p) for p in current.pids()):
        raise StackError(f"a stack is already up (Prefect {current.prefect.url}); run `metaauto stack down` first")
    settings = StackSettings.resolve(postgres, prefix)
    for name, port in (("prefect", prefect_port), ("mlflow", mlflow_port)):
        if not port_free(host, port):
            raise StackError(f"port {port} on {host} is in use; pick another with --{name}-port")
    ensure_databases(settings)
    infos: list[ServerInfo] = []
    state: Optional[StackState] = None
    try:
        infos = _start_servers(settings, host, prefect_port, mlflow_port)
        for info in infos:
            servers.wait_healthy(info, timeout)
        state = StackState(host=host, prefect=infos[0], mlflow=infos[1], workers=[], pool=pool, deployment="",
                           settings=settings, slots=slots, gpus=gpus, gpu_limit=gpu_limit)
        _write_state(state)
        state.deployment = configure_prefect(state.prefect_api, pool, gpus, gpu_limit)
        state.workers += start_workers(state, workers, slots, kind="tasks")
        _write_state(state)
        state.workers += start_workers(state, pool_workers, slots, kind="pool")
        _write_state(state)
    except BaseException:
        stop_trees([w.pid for w in (state.workers if state else [])] + [info.pid for info in infos])
        _state_path().unlink(missing_ok=True)
        raise
    return state


def add_workers(count: int, slots: Optional[int] = None, kind: str = "tasks") -> list[WorkerInfo]:
    """More local workers of ``kind`` for a running stack (they take trials from the same studies)."""
    state = read_state()
    if state is None:
        raise StackError("no stack is up; run `metaauto stack up` first")
    first = max((int(w.name.rsplit("-", 1)[1]) for w in state.workers if w.kind == kind), default=-1) + 1
    added = start_workers(state, count, slots or state.slots, first=first, kind=kind)
    state.workers.extend(added)
    _write_state(state)
    return added


def status() -> dict[str, Any]:
    """URLs, pids and health of every process of the stack (``{"up": False}`` when none was started);
    ``metaauto stack status --json`` prints it."""
    state = read_state()
    if state is None:
        return {"up": False}
    prefect_ok = alive(state.prefect.pid) and healthy(state.prefect.health_url)
    mlflow_ok = alive(state.mlflow.pid) and healthy(state.mlflow.health_url)
    online: list[str] = []
    if prefect_ok:
        try:
            online = online_workers(state.prefect_api, state.pool)
        except Exception:  # the server answers health but not the API yet: report the workers as unknown
            online = []
    workers = [{"name": w.name, "kind": w.kind, "pid": w.pid, "log": w.log, "running": alive(w.pid),
                "online": w.online_key in online} for w in state.workers]
    return {
        "up": prefect_ok and mlflow_ok and all(w["running"] for w in workers),
        "prefect": {"url": state.prefect.url, "api_url": state.prefect_api, "pid": state.prefect.pid,
                    "healthy": prefect_ok, "log": state.prefect.log},
        "mlflow": {"url": state.mlflow_url, "pid": state.mlflow.pid, "healthy": mlflow_ok, "log": state.mlflow.log},
        "pool": state.pool, "deployment": state.deployment, "workers": workers,
        "stores": state.settings.redacted(),
        "artifacts": str(stack_dir() / "artifacts"),
        "env": {k: (v if k != SEARCH_STORAGE_ENV else state.settings.redacted()["optuna_db"]) for k, v in state.env().items()},
    }


def down(drop: bool = False, timeout: float = 20.0) -> dict[str, Any]:
    """Stop workers (and their flow runs), then Prefect and MLflow; check nothing is left and the ports are free."""
    state = read_state()
    if state is None:
        return {"stopped": [], "dropped": []}
    roots = {w.name: w.pid for w in state.workers}
    roots.update(prefect=state.prefect.pid, mlflow=state.mlflow.pid)
    stopped = [name for name, pid in roots.items() if alive(pid) or descendants(pid)]
    # workers first (their flow runs report to the servers while they wind down), then the servers
    stop_trees([roots[n] for n in stopped if n not in ("prefect", "mlflow")], timeout)
    stop_trees([roots[n] for n in stopped if n in ("prefect", "mlflow")], timeout)
    busy = [port for port in (state.prefect.port, state.mlflow.port) if not port_released(state.host, port)]
    if busy:
        raise StackError(f"ports {busy} on {state.host} are still in use after stack down")
    dropped = drop_databases(state.settings) if drop else []
    _state_path().unlink(missing_ok=True)
    return {"stopped": stopped, "dropped": dropped}


def kill_tree(pid: int, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """End ``pid`` and everything it started (tests kill a worker with ``sig=SIGKILL``)."""
    stop_trees([pid], timeout, sig)


__all__ = [
    "DEFAULT_POOL", "DEFAULT_POSTGRES", "DEFAULT_PREFIX", "POSTGRES_ENV", "SEARCH_STORAGE_ENV", "StackError", "StackSettings", "StackState", "WorkerInfo",
    "add_workers", "configure_prefect", "connect", "descendants", "down", "drop_databases", "ensure_databases",
    "kill_tree", "read_state", "start_workers", "status", "up",
]
