"""Process supervision for the platform, on psutil: the one place that starts, watches and stops the
servers and workers of ``metaauto server`` (:mod:`metaauto.platform.servers`) and ``metaauto stack``
(:mod:`metaauto.platform.stack`).

* :func:`spawn` starts a command detached (its own session, so its own process group: a terminal closing
  does not take it down), stdout and stderr appended to a log file;
* :func:`alive` / :func:`tree_alive` tell a live process from a gone one (a zombie -- our own child not
  reaped yet -- counts as gone);
* :func:`stop_trees` ends processes *and their descendants and process-group members* (a Prefect process
  worker starts each flow run in a new session, so signalling a group is not enough; a server's forked
  workers may outlive its main process, so walking children is not enough either), SIGKILLs what is left
  after a timeout and says which processes survived;
* :func:`wait_until` waits for a condition (a health check answering, workers coming online) and fails
  early, with the log's last lines, when a watched process exits;
* :func:`save_record` / :func:`load_record` keep what was started (pids, ports, logs) as JSON under the
  project home, readable by a later ``status`` or ``stop``.
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
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import psutil

from metaauto.errors import MetaautoError

T = TypeVar("T")


class ProcessError(MetaautoError, RuntimeError):
    """A platform process cannot be started, reached or stopped (it exited, never answered, or survived SIGKILL)."""


def console_script(name: str) -> str:
    """The console script next to this interpreter (the venv's), so servers run the library's versions."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def spawn(command: list[str], env: Mapping[str, str], log: Path, cwd: Path) -> int:
    """Start ``command`` detached in a new session, output appended to ``log``; returns its pid."""
    with open(log, "ab") as handle:
        handle.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        handle.flush()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=dict(env), cwd=str(cwd), start_new_session=True)
    return process.pid


def _live(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        return _live(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def descendants(pid: int) -> list[int]:
    """``pid``'s live descendants, children first (a flow run started in its own session included)."""
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True) if _live(p)]
    except psutil.NoSuchProcess:
        return []


def _group(pgid: int) -> list[psutil.Process]:
    """Live members of process group ``pgid`` (the session :func:`spawn` opened, whoever their parent is now)."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and _live(process):
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _members(roots: Iterable[int]) -> dict[int, psutil.Process]:
    """Every live process of the trees rooted at ``roots``: the roots, their descendants, their groups."""
    found: dict[int, psutil.Process] = {}
    for root in roots:
        try:
            top = psutil.Process(root)
            for process in [top, *top.children(recursive=True)]:
                if _live(process):
                    found[process.pid] = process
        except psutil.NoSuchProcess:
            pass
        found.update((p.pid, p) for p in _group(root))
    return found


def tree_alive(root: int) -> bool:
    """Whether anything of ``root``'s tree still runs: ``root``, a descendant or a member of its group."""
    return bool(_members([root]))


def _signal(process: psutil.Process, sig: int) -> None:
    try:
        process.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def _reap(pid: int) -> None:
    """Collect the exit status when ``pid`` is our own child (tests start servers in-process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_trees(roots: Iterable[int], timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Signal every process of the trees rooted at ``roots`` (see :func:`_members`), SIGKILL what is left after
    ``timeout``; the trees wind down in parallel. Raises :class:`ProcessError` naming any survivor of SIGKILL."""
    roots = list(roots)
    seen: dict[int, psutil.Process] = {}
    for current, wait in ((sig, timeout), (signal.SIGKILL, 10.0)):
        deadline, signalled = time.monotonic() + wait, set()
        while True:
            seen.update(_members(roots))  # children forked while we wait are taken too
            seen = {pid: p for pid, p in seen.items() if _live(p)}
            for pid, process in seen.items():
                if pid not in signalled:
                    _signal(process, current)
                    signalled.add(pid)
            for root in roots:
                _reap(root)
            if not seen or time.monotonic() > deadline:
                break
            psutil.wait_procs(list(seen.values()), timeout=0.2)  # reaps our own children as they exit
        if not seen:
            return
    raise ProcessError(f"processes {sorted(seen)} (started by {roots}) survived SIGKILL")


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url`` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_tail(log: str | Path, lines: int = 20) -> str:
    try:
        return "".join(Path(log).read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, pids: Iterable[int], log: str | Path,
               interval: float = 0.5) -> None:
    """Return once ``predicate()`` holds; raise :class:`ProcessError` when one of ``pids`` exits first (with the
    last lines of ``log``) or after ``timeout`` seconds."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        dead = [pid for pid in pids if not alive(pid)]
        if dead:
            raise ProcessError(f"{what}: process {dead[0]} exited; last lines of {log}:\n{log_tail(log)}")
        time.sleep(interval)
    raise ProcessError(f"{what}: not within {timeout:.0f}s; see {log}")


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now (tests start servers on these)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_released(host: str, port: int, wait: float = 10.0) -> bool:
    """Whether ``port`` is free, waiting up to ``wait`` seconds for a stopped server's socket to close."""
    deadline = time.monotonic() + wait
    while not port_free(host, port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def save_record(path: Path, record: Any) -> None:
    """Write a dataclass as JSON, atomically and readable by its owner only (URLs in it may carry passwords)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)


def load_record(path: Path) -> dict[str, Any] | None:
    """The JSON object :func:`save_record` wrote, or ``None`` when there is none or it is unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


__all__ = [
    "ProcessError", "alive", "console_script", "descendants", "free_port", "healthy", "load_record", "log_tail",
    "port_free", "port_released", "save_record", "spawn", "stop_trees", "tree_alive", "wait_until",
]
