"""Prefect and MLflow servers: how to run them (shared with the stack), and the local pair for the project home.

Why a module rather than two shell lines: the servers must agree with the library on where things live.
The local Prefect server keeps its SQLite database under ``<home>/prefect`` (``PREFECT_HOME``), and the
local MLflow server serves the very store the library writes when no server runs
(:func:`metaauto.tracking.store`'s embedded SQLite database and artifact root), so runs logged before the
server existed show up in its UI. The scale-out stack (:mod:`metaauto.platform.stack`) runs the same two
servers on PostgreSQL through :func:`prefect_server` and :func:`mlflow_server`.

Both run detached (:func:`metaauto.platform.process.spawn`), so ``stop`` ends a server and every worker it
forked, and a terminal closing does not take them down. Their records (pid, port, log: :class:`ServerInfo`)
and logs live under ``<home>/servers``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from metaauto.config import home_subdir
from metaauto.platform.process import (
    ProcessError,
    console_script,
    free_port,
    healthy,
    load_record,
    port_free,
    save_record,
    spawn,
    stop_trees,
    tree_alive,
    wait_until,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000
SERVER_NAMES = ("prefect", "mlflow")


class ServerError(ProcessError):
    """A server cannot be started (port taken, process died, health check never answered)."""


@dataclass
class ServerInfo:
    """A started server: what ``<home>/servers/<name>.json`` (and the stack's state) records."""

    name: str
    pid: int
    host: str
    port: int
    url: str
    health_url: str
    log: str
    started_at: float

    @property
    def api_url(self) -> str:
        """The URL clients are configured with (``PREFECT_API_URL`` / ``MLFLOW_TRACKING_URI``)."""
        return f"{self.url}/api" if self.name == "prefect" else self.url


@dataclass
class ServerStatus:
    """Whether a recorded server runs and answers its health check (``server status --json`` prints these)."""

    name: str
    running: bool
    healthy: bool
    url: Optional[str] = None
    api_url: Optional[str] = None
    pid: Optional[int] = None
    log: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def servers_dir() -> Path:
    return home_subdir("servers")


def prefect_home() -> Path:
    return home_subdir("prefect")


def server_env() -> dict[str, str]:
    """This environment without what would point a server at another server or store, analytics off."""
    env = dict(os.environ)
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_DATABASE_CONNECTION_URL"):
        env.pop(name, None)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


def prefect_server(host: str, port: int, home: Path, database: str) -> tuple[list[str], dict[str, str]]:
    """``(command, env)`` of a Prefect server on ``database`` (an async SQLAlchemy URL) with ``PREFECT_HOME=home``."""
    env = {**server_env(), "PREFECT_HOME": str(home), "PREFECT_API_DATABASE_CONNECTION_URL": database,
           "PREFECT_UI_API_URL": f"http://{host}:{port}/api"}
    return [console_script("prefect"), "server", "start", "--host", host, "--port", str(port)], env


def mlflow_server(host: str, port: int, backend: str, artifacts: str, serve_artifacts: bool = False,
                  default_artifact_root: Optional[str] = None) -> tuple[list[str], dict[str, str]]:
    """``(command, env)`` of an MLflow tracking server on ``backend`` storing artifacts at ``artifacts``."""
    command = [console_script("mlflow"), "server", "--host", host, "--port", str(port), "--workers", "1",
               "--backend-store-uri", backend]
    if default_artifact_root:
        command += ["--default-artifact-root", default_artifact_root]
    command += (["--serve-artifacts"] if serve_artifacts else []) + ["--artifacts-destination", artifacts]
    # MLflow 3 starts a job runner with ~10 huey consumers for GenAI jobs; tracking needs none of them
    return command, {**server_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def health_url(name: str, host: str, port: int) -> str:
    return f"http://{host}:{port}/api/health" if name == "prefect" else f"http://{host}:{port}/health"


def launch(name: str, command: list[str], env: dict[str, str], host: str, port: int, directory: Path) -> ServerInfo:
    """Spawn server ``name`` (log ``<directory>/<name>.log``) and describe it; does not wait for it."""
    log = directory / f"{name}.log"
    pid = spawn(command, env, log, cwd=directory)
    return ServerInfo(name=name, pid=pid, host=host, port=port, url=f"http://{host}:{port}",
                      health_url=health_url(name, host, port), log=str(log), started_at=time.time())


def wait_healthy(info: ServerInfo, timeout: float) -> None:
    wait_until(lambda: healthy(info.health_url), timeout, f"{info.name} server answering {info.health_url}",
               [info.pid], info.log)


# -- the local pair ----------------------------------------------------------------------------------------


def _record_path(name: str) -> Path:
    return servers_dir() / f"{name}.json"


def read_info(name: str) -> Optional[ServerInfo]:
    data = load_record(_record_path(name))
    try:
        return ServerInfo(**data) if data is not None else None
    except TypeError:
        return None


def _local_command(name: str, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    if name == "prefect":
        home = prefect_home()
        return prefect_server(host, port, home, f"sqlite+aiosqlite:///{home / 'prefect.db'}")
    from metaauto.tracking.store import artifact_root, mlflow_dir

    root = artifact_root()
    return mlflow_server(host, port, f"sqlite:///{mlflow_dir() / 'mlflow.db'}", root, default_artifact_root=root)


def server_status(name: str) -> ServerStatus:
    """Whether server ``name`` runs and answers (``running`` False if it was never started)."""
    info = read_info(name)
    if info is None:
        return ServerStatus(name=name, running=False, healthy=False)
    running = tree_alive(info.pid)
    return ServerStatus(name=name, running=running, healthy=running and healthy(info.health_url), url=info.url,
                        api_url=info.api_url, pid=info.pid, log=info.log)


def status() -> dict[str, ServerStatus]:
    return {name: server_status(name) for name in SERVER_NAMES}


def _launch_local(name: str, host: str, port: int) -> ServerInfo:
    current = server_status(name)
    if current.running:
        raise ServerError(f"{name} server already running (pid {current.pid}, {current.url}); run `metaauto server stop` first")
    if not port_free(host, port):
        raise ServerError(f"port {port} on {host} is in use; pick another with --{name}-port")
    command, env = _local_command(name, host, port)
    info = launch(name, command, env, host, port, servers_dir())
    save_record(_record_path(name), info)
    return info


def start(
    host: str = DEFAULT_HOST,
    prefect_port: int = DEFAULT_PREFECT_PORT,
    mlflow_port: int = DEFAULT_MLFLOW_PORT,
    timeout: float = 120.0,
) -> dict[str, ServerInfo]:
    """Start both servers detached and wait until both answer their health checks.

    On failure whatever was started is stopped again, so a half-started pair never lingers.
    """
    started: dict[str, ServerInfo] = {}
    try:
        for name, port in (("prefect", prefect_port), ("mlflow", mlflow_port)):
            started[name] = _launch_local(name, host, port)
        for info in started.values():
            wait_healthy(info, timeout)
    except BaseException:
        for name in started:
            stop_server(name)
        raise
    return started


def stop_server(name: str, timeout: float = 20.0) -> bool:
    """End the server and everything it started (SIGTERM, SIGKILL after ``timeout``); True if one was running."""
    info = read_info(name)
    if info is None:
        return False
    was_running = tree_alive(info.pid)
    stop_trees([info.pid], timeout)
    _record_path(name).unlink(missing_ok=True)
    return was_running


def stop() -> dict[str, bool]:
    return {name: stop_server(name) for name in SERVER_NAMES}


__all__ = [
    "DEFAULT_HOST", "DEFAULT_MLFLOW_PORT", "DEFAULT_PREFECT_PORT", "ServerError", "ServerInfo", "ServerStatus",
    "free_port", "health_url", "healthy", "launch", "mlflow_server", "port_free", "prefect_home",
    "prefect_server", "read_info", "server_env", "servers_dir", "start", "status", "stop", "stop_server",
    "tree_alive", "wait_healthy",
]
