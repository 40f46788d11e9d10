"""Local Prefect and MLflow servers for the project home: start, stop, status.

Why a module rather than two shell lines: the servers must agree with the library on where things live.
The Prefect server keeps its SQLite database under ``<home>/prefect`` (``PREFECT_HOME``), and the MLflow
server serves the very store the library writes when no server runs (:func:`metaauto.tracking.store`'s
embedded SQLite database and artifact root), so runs logged before the server existed show up in its UI.

Both run detached in their own process group (``start_new_session``), so ``stop`` can end a server and
every worker it forked with one signal, and a terminal closing does not take them down. Pid files, the
ports and logs live under ``<home>/servers``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from metaauto.config import home_dir
from metaauto.errors import MetaautoError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000
SERVER_NAMES = ("prefect", "mlflow")


class ServerError(MetaautoError, RuntimeError):
    """A server cannot be started (port taken, process died, health check never answered)."""


@dataclass
class ServerInfo:
    """What ``<home>/servers/<name>.json`` records about a started server."""

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


def servers_dir() -> Path:
    path = home_dir() / "servers"
    path.mkdir(parents=True, exist_ok=True)
    return path


def prefect_home() -> Path:
    path = home_dir() / "prefect"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _bin(name: str) -> str:
    """The console script next to this interpreter (the venv's), so servers run the library's versions."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS considers free right now (tests start servers on these)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our own child not yet reaped) counts as gone
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # only zombies left in the group counts as gone
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _info_path(name: str) -> Path:
    return servers_dir() / f"{name}.json"


def read_info(name: str) -> Optional[ServerInfo]:
    path = _info_path(name)
    if not path.is_file():
        return None
    try:
        return ServerInfo(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def _command(name: str, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if name == "prefect":
        home = prefect_home()
        env.update(
            PREFECT_HOME=str(home),
            PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_API_URL=f"http://{host}:{port}/api",
        )
        # the server must not try to talk to another server while it starts
        env.pop("PREFECT_API_URL", None)
        return [_bin("prefect"), "server", "start", "--host", host, "--port", str(port)], env
    from metaauto.tracking.store import artifact_root, mlflow_dir

    env.pop("MLFLOW_TRACKING_URI", None)
    store = f"sqlite:///{mlflow_dir() / 'mlflow.db'}"
    root = artifact_root()
    return [
        _bin("mlflow"), "server", "--host", host, "--port", str(port), "--workers", "1",
        "--backend-store-uri", store, "--default-artifact-root", root,
        "--artifacts-destination", root,
    ], env


def _health_url(name: str, host: str, port: int) -> str:
    return f"http://{host}:{port}/api/health" if name == "prefect" else f"http://{host}:{port}/health"


def server_status(name: str) -> dict:
    """``{"name", "running", "healthy", "url", "pid", "log"}`` for one server (``running`` False if never started)."""
    info = read_info(name)
    if info is None:
        return {"name": name, "running": False, "healthy": False, "url": None, "pid": None, "log": None}
    running = _group_alive(info.pid)
    return {
        "name": name, "running": running, "healthy": running and healthy(info.health_url),
        "url": info.url, "api_url": info.api_url, "pid": info.pid, "log": info.log,
    }


def status() -> dict[str, dict]:
    return {name: server_status(name) for name in SERVER_NAMES}


def _launch(name: str, host: str, port: int) -> ServerInfo:
    current = server_status(name)
    if current["running"]:
        raise ServerError(
            f"{name} server already running (pid {current['pid']}, {current['url']}); run `metaauto server stop` first"
        )
    if not port_free(host, port):
        raise ServerError(f"port {port} on {host} is in use; pick another with --{name}-port")
    command, env = _command(name, host, port)
    log = servers_dir() / f"{name}.log"
    with open(log, "ab") as handle:
        handle.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        handle.flush()
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=str(servers_dir()), start_new_session=True,
        )
    info = ServerInfo(
        name=name, pid=process.pid, host=host, port=port, url=f"http://{host}:{port}",
        health_url=_health_url(name, host, port), log=str(log), started_at=time.time(),
    )
    _info_path(name).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return info


def _wait_healthy(info: ServerInfo, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(info.health_url):
            return
        if not _alive(info.pid):
            tail = "".join(Path(info.log).read_text(errors="replace").splitlines(keepends=True)[-20:])
            raise ServerError(f"{info.name} server exited while starting; last lines of {info.log}:\n{tail}")
        time.sleep(0.5)
    raise ServerError(f"{info.name} server did not answer {info.health_url} within {timeout:.0f}s; see {info.log}")


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
            started[name] = _launch(name, host, port)
        for info in started.values():
            _wait_healthy(info, timeout)
    except BaseException:
        for name in started:
            stop_server(name)
        raise
    return started


def stop_server(name: str, timeout: float = 20.0) -> bool:
    """SIGTERM the server's process group, SIGKILL what is left after ``timeout``; True if one was running."""
    info = read_info(name)
    if info is None:
        return False
    was_running = _group_alive(info.pid)
    if was_running:
        try:
            os.killpg(info.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _group_alive(info.pid) and time.monotonic() < deadline:
            _reap(info.pid)
            time.sleep(0.2)
        if _group_alive(info.pid):
            try:
                os.killpg(info.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while _group_alive(info.pid) and time.monotonic() < deadline + 5:
                _reap(info.pid)
                time.sleep(0.1)
    _reap(info.pid)
    _info_path(name).unlink(missing_ok=True)
    return was_running


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child (tests), so it does not stay a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop() -> dict[str, bool]:
    return {name: stop_server(name) for name in SERVER_NAMES}


__all__ = [
    "DEFAULT_HOST", "DEFAULT_MLFLOW_PORT", "DEFAULT_PREFECT_PORT", "ServerError", "ServerInfo", "free_port",
    "healthy", "prefect_home", "read_info", "servers_dir", "start", "status", "stop", "stop_server",
]
