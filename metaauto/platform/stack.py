"""The local scale-out stack: MLflow and Prefect on PostgreSQL, long-lived task workers, a process work pool.

``metaauto server`` (:mod:`metaauto.platform.servers`) runs the two servers on SQLite for one user on one machine.
The stack is what several processes -- and several machines -- share: every store is a PostgreSQL
database, so MLflow's tracking store, Prefect's orchestration database and the Optuna study all accept
concurrent writers, and a worker on another machine needs nothing but three URLs:

* ``MLFLOW_TRACKING_URI``: the MLflow server (``--serve-artifacts``: clients upload artifacts through it,
  so a remote worker needs no shared filesystem);
* ``PREFECT_API_URL``: the Prefect server the workers subscribe to or poll;
* ``METAAUTO_SEARCH_STORAGE``: the Optuna storage the workers join.

``stack up`` creates the databases when missing, starts both servers detached (their own process groups,
as :mod:`metaauto.platform.servers` does), and then two kinds of workers:

* ``workers`` **task workers** (``python -m flows.task_worker``): long-lived Prefect task workers serving
  the ``search-worker`` task. ``search-learners`` with ``workers > 0`` (and the default
  ``dispatch="task-workers"``) submits that many background runs of it; each joins the study and pulls
  trials until the study has its trials. The process imported PyTorch, MLflow and the data once, so a
  search pays no start-up: this is the throughput path. Their parameters travel through the block
  ``local-file-system/metaauto-task-runs`` (a directory under the stack; other machines need a shared or
  remote-file-system block of that name).
* ``pool_workers`` **process workers** on the process work pool, with the ``search-worker/scaleout``
  deployment (the same loop as a flow, ``dispatch="deployment"``) and any other flow deployed there: every
  flow run is a new process, the model of a Kubernetes work pool where each run is a pod with a GPU.

Where things are:

* ``METAAUTO_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``): the server the
  databases ``<prefix>_mlflow``, ``<prefix>_prefect`` and ``<prefix>_optuna`` are created on;
* ``METAAUTO_STACK_MLFLOW_DB``, ``METAAUTO_STACK_PREFECT_DB``, ``METAAUTO_SEARCH_STORAGE``: full URLs
  that replace those defaults one by one (used as given, not created);
* state, logs and served artifacts under ``<home>/stack``.

``stack down`` ends every process the stack started *and their descendants* (a Prefect process worker
starts each flow run in a new session, so killing process groups is not enough), then checks that none
is left and that the ports are free.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse, urlunparse

from metaauto.config import home_dir
from metaauto.platform.servers import (
    DEFAULT_HOST,
    ServerError,
    ServerInfo,
    _alive,
    _bin,
    _reap,
    _wait_healthy,
    healthy,
    port_free,
)

POSTGRES_ENV = "METAAUTO_POSTGRES_URL"
MLFLOW_DB_ENV = "METAAUTO_STACK_MLFLOW_DB"
PREFECT_DB_ENV = "METAAUTO_STACK_PREFECT_DB"
SEARCH_STORAGE_ENV = "METAAUTO_SEARCH_STORAGE"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_PREFIX = "metaauto"
DEFAULT_POOL = "metaauto-trials"
DEPLOYMENT_NAME = "scaleout"
WORKER_FLOW = "search-worker"
#: workers poll for scheduled flow runs this often (Prefect's default is 10 s, which a short search pays for)
WORKER_QUERY_SECONDS = 2
DEFAULT_STACK_PREFECT_PORT = 4200
DEFAULT_STACK_MLFLOW_PORT = 5000


class StackError(ServerError):
    """The stack cannot be started, reached or stopped (PostgreSQL down, port taken, a process that will not die)."""


def stack_dir() -> Path:
    path = home_dir() / "stack"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _state_path() -> Path:
    return stack_dir() / "stack.json"


def repo_root() -> Path:
    """The checkout whose ``flows/`` the workers run (the deployment's working directory)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "flows" / "worker.py").is_file():
        raise StackError(f"{root} has no flows/worker.py: the stack deploys the flows of a source checkout")
    return root


def redact(url: str) -> str:
    """``url`` without its password (the user and host stay: they say which server and role)."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
    return urlunparse(parsed._replace(netloc=netloc))


def _database_url(server: str, database: str) -> str:
    parsed = urlparse(server)
    return urlunparse(parsed._replace(path=f"/{database}"))


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


def _connect(url: str) -> Any:
    import psycopg2

    try:
        return psycopg2.connect(_with_scheme(url, "postgresql"), connect_timeout=5)
    except psycopg2.Error as exc:
        raise StackError(f"PostgreSQL at {redact(url)} is not reachable: {str(exc).strip().splitlines()[0]}; "
                         f"start it or point {POSTGRES_ENV} (or --postgres) at one") from None


def ensure_databases(settings: StackSettings) -> list[str]:
    """Create the stack's databases that do not exist yet; returns the ones created."""
    created = []
    connection = _connect(settings.postgres)
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
        _connect(url).close()  # an explicit URL that is wrong fails here, naming itself
    return created


def drop_databases(settings: StackSettings) -> list[str]:
    """Drop the databases the stack derives from ``postgres`` (tests, ``stack down --drop``); ends their sessions first."""
    dropped = []
    connection = _connect(settings.postgres)
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


@dataclass
class StackState:
    """``<home>/stack/stack.json``: what ``up`` started, read by ``status`` and ``down``."""

    host: str
    prefect: dict[str, Any]
    mlflow: dict[str, Any]
    workers: list[dict[str, Any]]
    pool: str
    deployment: str
    settings: dict[str, Any]
    started_at: float = field(default_factory=time.time)

    @property
    def prefect_api(self) -> str:
        return f"{self.prefect['url']}/api"

    @property
    def mlflow_url(self) -> str:
        return self.mlflow["url"]

    def env(self) -> dict[str, str]:
        """What a client or a worker on any machine sets to use this stack."""
        return {"PREFECT_API_URL": self.prefect_api, "MLFLOW_TRACKING_URI": self.mlflow_url,
                SEARCH_STORAGE_ENV: self.settings["optuna_db"]}

    def pids(self) -> list[int]:
        return [w["pid"] for w in self.workers] + [self.prefect["pid"], self.mlflow["pid"]]

    def stack_settings(self) -> StackSettings:
        keys = ("postgres", "mlflow_db", "prefect_db", "optuna_db")
        return StackSettings(**{k: self.settings[k] for k in keys}, create=tuple(self.settings.get("create", ())))


def read_state() -> Optional[StackState]:
    path = _state_path()
    if not path.is_file():
        return None
    try:
        return StackState(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def _write_state(state: StackState) -> None:
    path = _state_path()
    path.write_text(json.dumps(asdict(state), indent=2) + "\n")
    path.chmod(0o600)  # the database URLs may carry passwords


# --- processes ---------------------------------------------------------------------------------------------

def _ppids() -> dict[int, int]:
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            table[int(stat.parent.name)] = int(fields[1])
    return table


def descendants(pid: int) -> list[int]:
    """``pid``'s live descendants, children first (read from ``/proc``; a flow run in its own session is included)."""
    table = _ppids()
    children: dict[int, list[int]] = {}
    for child, parent in table.items():
        children.setdefault(parent, []).append(child)
    found, frontier = [], [pid]
    while frontier:
        nxt = []
        for p in frontier:
            nxt.extend(children.get(p, []))
        found.extend(nxt)
        frontier = nxt
    return found


def kill_tree(pid: int, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Signal ``pid``, its process group and every descendant; SIGKILL what is left after ``timeout``."""
    kill_trees([pid], timeout, sig)


def kill_trees(pids: list[int], timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """:func:`kill_tree` for several roots at once (they wind down in parallel, not one timeout after another)."""
    def targets() -> set[int]:
        found = set()
        for root in pids:
            found |= {p for p in [root, *descendants(root)] if _alive(p)}
        return found

    victims = targets()
    for current in (sig, signal.SIGKILL):
        for p in victims:
            try:
                os.kill(p, current)
            except ProcessLookupError:
                pass
        for root in pids:
            try:
                os.killpg(root, current)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (timeout if current != signal.SIGKILL else 10)
        while time.monotonic() < deadline:
            for root in pids:
                _reap(root)
            victims = {p for p in victims | targets() if _alive(p)}  # children forked while we waited
            if not victims:
                return
            time.sleep(0.2)
    left = sorted(p for p in victims if _alive(p))
    if left:
        raise StackError(f"processes {left} (started by {pids}) survived SIGKILL")


def _spawn(name: str, command: list[str], env: dict[str, str], log: Path) -> int:
    with open(log, "ab") as handle:
        handle.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        handle.flush()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   cwd=str(stack_dir()), start_new_session=True)
    return process.pid


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_DATABASE_CONNECTION_URL"):
        env.pop(name, None)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


def _server_commands(settings: StackSettings, host: str, prefect_port: int, mlflow_port: int) -> dict[str, tuple[list[str], dict[str, str]]]:
    prefect_home = stack_dir() / "prefect"
    prefect_home.mkdir(exist_ok=True)
    artifacts = stack_dir() / "artifacts"
    artifacts.mkdir(exist_ok=True)
    prefect_env = {**_base_env(), "PREFECT_HOME": str(prefect_home),
                   "PREFECT_API_DATABASE_CONNECTION_URL": settings.prefect_backend,
                   "PREFECT_UI_API_URL": f"http://{host}:{prefect_port}/api"}
    mlflow_command = [
        _bin("mlflow"), "server", "--host", host, "--port", str(mlflow_port), "--workers", "1",
        "--backend-store-uri", settings.mlflow_backend, "--serve-artifacts",
        "--artifacts-destination", artifacts.as_uri(),
    ]
    return {
        "prefect": ([_bin("prefect"), "server", "start", "--host", host, "--port", str(prefect_port)], prefect_env),
        # MLflow 3 starts a job runner with ~10 huey consumers for GenAI jobs; tracking needs none of them
        "mlflow": (mlflow_command, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **_base_env()}),
    }


def worker_env(prefect_api: str, mlflow_url: str, optuna_db: str) -> dict[str, str]:
    """The environment of a worker (and so of every flow run it starts): the three URLs and this checkout."""
    root = str(repo_root())
    env = _base_env()
    env.update({
        "PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": mlflow_url, SEARCH_STORAGE_ENV: optuna_db,
        "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
        "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PREFECT_HOME": str(stack_dir() / "prefect"),
    })
    return env


def worker_command(pool: str, name: str, slots: int) -> list[str]:
    """A Prefect process worker on ``pool`` (every flow run it takes is a new process)."""
    return [_bin("prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", name, "--limit", str(slots)]


def task_worker_command(slots: int) -> list[str]:
    """A long-lived task worker serving ``search-worker`` (``slots`` worker runs at once, in threads)."""
    return [sys.executable, "-m", "flows.task_worker", "--slots", str(slots)]


def _prefect_client(api: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Client:
        def __enter__(self) -> Any:
            self._settings = temporary_settings(updates={PREFECT_API_URL: api})
            self._settings.__enter__()
            self._client = get_client(sync_client=True)
            return self._client.__enter__()

        def __exit__(self, *exc: Any) -> None:
            try:
                self._client.__exit__(*exc)
            finally:
                self._settings.__exit__(*exc)

    return _Client()


def configure_prefect(api: str, pool: str, gpus: int = 0, gpu_limit: str = "gpu") -> str:
    """Create the process pool, the GPU global concurrency limit (``gpus`` slots), the task runs' storage
    block and the ``search-worker/scaleout`` deployment."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with _prefect_client(api) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                                   description="metaauto trials: one search-worker flow run per slot"))
        except ObjectAlreadyExists:
            pass
        if gpus:
            client.upsert_global_concurrency_limit_by_name(gpu_limit, gpus)
    with temporary_settings(updates={PREFECT_API_URL: api}):
        from prefect.filesystems import LocalFileSystem

        from flows.worker import TASK_STORAGE_BLOCK

        storage = stack_dir() / "task-runs"
        storage.mkdir(exist_ok=True)
        LocalFileSystem(basepath=str(storage)).save(TASK_STORAGE_BLOCK.split("/", 1)[1], overwrite=True)
    root = repo_root()
    try:
        from flows.worker import search_worker
    except ImportError as exc:
        raise StackError(f"cannot import flows/worker.py from {root} ({exc}); run from the repository root") from exc
    with temporary_settings(updates={PREFECT_API_URL: api}):
        source = search_worker.from_source(source=str(root), entrypoint="flows/worker.py:search_worker")
        # not flow.deploy(): in Prefect 3.8.8 it asks the server for the pool's workers with limit=None, which the
        # server rejects (422); the deployment it would create is this one (a set_working_directory pull step)
        deployment = source.to_deployment(name=DEPLOYMENT_NAME, work_pool_name=pool, tags=["metaauto", "scaleout"],
                                          description="Joins a study and runs its trials until it has them all "
                                                      "(submitted by search-learners with workers > 0).")
        deployment.apply(work_pool_name=pool)
    return f"{WORKER_FLOW}/{DEPLOYMENT_NAME}"


def online_workers(api: str, pool: str) -> list[str]:
    """Names of the process workers on ``pool`` and ``host-pid`` of the task workers serving ``search-worker``."""
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus

    from flows.worker import task_workers

    with _prefect_client(api) as client:
        workers = client.read_workers_for_work_pool(pool, worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"])),
                                                    offset=0, limit=200)  # None is refused by the server (422)
        serving = task_workers(client)
    return sorted(w.name for w in workers) + serving


def _online_key(worker: dict[str, Any]) -> str:
    """How a started worker appears in :func:`online_workers` (a task worker names itself ``host-pid``)."""
    return f"{socket.gethostname()}-{worker['pid']}" if worker.get("kind") == "tasks" else worker["name"]


def _wait_for(predicate: Any, timeout: float, what: str, pids: list[int], log: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        dead = [p for p in pids if not _alive(p)]
        if dead:
            raise StackError(f"{what}: process {dead[0]} exited; see {log}")
        time.sleep(0.5)
    raise StackError(f"{what} not within {timeout:.0f}s; see {log}")


def start_workers(state: StackState, count: int, slots: int = 1, first: int = 0, prefix: Optional[str] = None,
                  wait: float = 90.0, kind: str = "tasks") -> list[dict[str, Any]]:
    """Start ``count`` detached workers of ``kind`` (``tasks``: task workers, ``pool``: process workers on the
    stack's pool); returns ``{"name", "kind", "pid", "log"}`` each once all are online."""
    if kind not in ("tasks", "pool"):
        raise StackError(f"worker kind {kind!r} is neither 'tasks' nor 'pool'")
    api, pool = state.prefect_api, state.pool
    env = worker_env(api, state.mlflow_url, state.settings["optuna_db"])
    prefix = prefix or socket.gethostname().split(".")[0]
    label = "worker" if kind == "tasks" else "pool-worker"
    started = []
    for index in range(first, first + count):
        name = f"{prefix}-{label}-{index}"
        log = stack_dir() / f"{label}-{index}.log"
        command = task_worker_command(slots) if kind == "tasks" else worker_command(pool, name, slots)
        started.append({"name": name, "kind": kind, "pid": _spawn(name, command, env, log), "log": str(log)})
    keys = {_online_key(w) for w in started}
    try:
        _wait_for(lambda: keys <= set(online_workers(api, pool)), wait, f"{label}s {sorted(w['name'] for w in started)} online",
                  [w["pid"] for w in started], started[0]["log"] if started else "")
    except BaseException:
        kill_trees([w["pid"] for w in started])
        raise
    return started


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
    if current is not None and any(_alive(p) for p in current.pids()):
        raise StackError(f"a stack is already up (Prefect {current.prefect['url']}); run `metaauto stack down` first")
    settings = StackSettings.resolve(postgres, prefix)
    for name, port in (("prefect", prefect_port), ("mlflow", mlflow_port)):
        if not port_free(host, port):
            raise StackError(f"port {port} on {host} is in use; pick another with --{name}-port")
    ensure_databases(settings)
    infos: dict[str, ServerInfo] = {}
    started_workers: list[dict[str, Any]] = []
    try:
        for name, (command, env) in _server_commands(settings, host, prefect_port, mlflow_port).items():
            port = prefect_port if name == "prefect" else mlflow_port
            log = stack_dir() / f"{name}.log"
            pid = _spawn(name, command, env, log)
            health = f"http://{host}:{port}/api/health" if name == "prefect" else f"http://{host}:{port}/health"
            infos[name] = ServerInfo(name=name, pid=pid, host=host, port=port, url=f"http://{host}:{port}",
                                     health_url=health, log=str(log), started_at=time.time())
        for info in infos.values():
            _wait_healthy(info, timeout)
        state = StackState(host=host, prefect=asdict(infos["prefect"]), mlflow=asdict(infos["mlflow"]), workers=[],
                           pool=pool, deployment="", settings=asdict(settings))
        _write_state(state)
        state.deployment = configure_prefect(state.prefect_api, pool, gpus, gpu_limit)
        started_workers = start_workers(state, workers, slots, kind="tasks")
        started_workers += start_workers(state, pool_workers, slots, kind="pool")
        state.workers = started_workers
        state.settings.update(slots=slots, gpus=gpus, gpu_limit=gpu_limit)
        _write_state(state)
    except BaseException:
        kill_trees([w["pid"] for w in started_workers] + [info.pid for info in infos.values()])
        _state_path().unlink(missing_ok=True)
        raise
    return state


def add_workers(count: int, slots: Optional[int] = None, kind: str = "tasks") -> list[dict[str, Any]]:
    """More local workers of ``kind`` for a running stack (they take trials from the same studies)."""
    state = read_state()
    if state is None:
        raise StackError("no stack is up; run `metaauto stack up` first")
    first = max((int(w["name"].rsplit("-", 1)[1]) for w in state.workers if w.get("kind", "pool") == kind), default=-1) + 1
    added = start_workers(state, count, slots or state.settings.get("slots", 1), first=first, kind=kind)
    state.workers.extend(added)
    _write_state(state)
    return added


def status() -> dict[str, Any]:
    """URLs, pids and health of every process of the stack (``{"up": False}`` when none was started)."""
    state = read_state()
    if state is None:
        return {"up": False}
    prefect_ok = _alive(state.prefect["pid"]) and healthy(state.prefect["health_url"])
    mlflow_ok = _alive(state.mlflow["pid"]) and healthy(state.mlflow["health_url"])
    online: list[str] = []
    if prefect_ok:
        try:
            online = online_workers(state.prefect_api, state.pool)
        except Exception:  # the server answers health but not the API yet: report the workers as unknown
            online = []
    workers = [{**w, "kind": w.get("kind", "pool"), "running": _alive(w["pid"]), "online": _online_key(w) in online}
               for w in state.workers]
    return {
        "up": prefect_ok and mlflow_ok and all(w["running"] for w in workers),
        "prefect": {"url": state.prefect["url"], "api_url": state.prefect_api, "pid": state.prefect["pid"],
                    "healthy": prefect_ok, "log": state.prefect["log"]},
        "mlflow": {"url": state.mlflow_url, "pid": state.mlflow["pid"], "healthy": mlflow_ok, "log": state.mlflow["log"]},
        "pool": state.pool, "deployment": state.deployment, "workers": workers,
        "stores": {k: redact(state.settings[k]) for k in ("mlflow_db", "prefect_db", "optuna_db")},
        "artifacts": str(stack_dir() / "artifacts"),
        "env": {k: (redact(v) if k == SEARCH_STORAGE_ENV else v) for k, v in state.env().items()},
    }


def down(drop: bool = False, timeout: float = 20.0) -> dict[str, Any]:
    """Stop workers (and their flow runs), then Prefect and MLflow; check nothing is left and the ports are free."""
    state = read_state()
    if state is None:
        return {"stopped": [], "dropped": []}
    roots = {w["name"]: w["pid"] for w in state.workers}
    roots.update(prefect=state.prefect["pid"], mlflow=state.mlflow["pid"])
    stopped = [name for name, pid in roots.items() if _alive(pid) or descendants(pid)]
    # workers first (their flow runs report to the servers while they wind down), then the servers
    kill_trees([roots[n] for n in stopped if n not in ("prefect", "mlflow")], timeout)
    kill_trees([roots[n] for n in stopped if n in ("prefect", "mlflow")], timeout)
    busy = [port for port in (state.prefect["port"], state.mlflow["port"]) if not _port_released(state.host, port)]
    if busy:
        raise StackError(f"ports {busy} on {state.host} are still in use after stack down")
    dropped = drop_databases(state.stack_settings()) if drop else []
    _state_path().unlink(missing_ok=True)
    return {"stopped": stopped, "dropped": dropped}


def _port_released(host: str, port: int, wait: float = 10.0) -> bool:
    deadline = time.monotonic() + wait
    while not port_free(host, port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


__all__ = [
    "DEFAULT_POOL", "POSTGRES_ENV", "SEARCH_STORAGE_ENV", "StackError", "configure_prefect", "StackSettings", "StackState", "add_workers",
    "descendants", "down", "drop_databases", "ensure_databases", "kill_tree", "kill_trees", "read_state", "redact", "start_workers",
    "status", "task_worker_command", "up", "worker_command", "worker_env",
]
