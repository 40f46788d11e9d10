"""`metaauto server start|status|stop` against real Prefect and MLflow servers on free loopback ports."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest
from typer.testing import CliRunner

from metaauto.platform import servers
from metaauto.platform.process import tree_alive
from metaauto.cli import app
from metaauto.tracking.store import mlflow_dir

runner = CliRunner()


def test_start_status_stop_on_free_ports():
    prefect_port, mlflow_port = servers.free_port(), servers.free_port()
    started = runner.invoke(app, ["server", "start", "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)])
    try:
        assert started.exit_code == 0, started.output
        assert f"Prefect UI: http://127.0.0.1:{prefect_port}" in started.output
        assert f"MLflow UI:  http://127.0.0.1:{mlflow_port}" in started.output
        assert f"export PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api" in started.output

        state = json.loads(runner.invoke(app, ["server", "status", "--json"]).output)
        assert state["prefect"]["healthy"] and state["mlflow"]["healthy"]
        # the stores live under the project home: Prefect's database and the library's own MLflow store
        assert (servers.prefect_home() / "prefect.db").is_file()
        assert (mlflow_dir() / "mlflow.db").is_file()
        with urllib.request.urlopen(f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search?max_results=10") as r:
            assert r.status == 200

        # a second start refuses rather than orphaning the running pair
        again = runner.invoke(app, ["server", "start", "--prefect-port", str(servers.free_port()), "--mlflow-port", str(servers.free_port())])
        assert again.exit_code == 2 and "already running" in again.output
        pids = [state["prefect"]["pid"], state["mlflow"]["pid"]]
    finally:
        stopped = runner.invoke(app, ["server", "stop"])
    assert stopped.exit_code == 0, stopped.output
    assert "prefect: stopped" in stopped.output and "mlflow: stopped" in stopped.output
    for pid in pids:
        assert not tree_alive(pid), f"process group {pid} survived `server stop`"
    assert servers.port_free("127.0.0.1", prefect_port) and servers.port_free("127.0.0.1", mlflow_port)

    after = runner.invoke(app, ["server", "status"])
    assert after.exit_code == 1 and "prefect: not running" in after.output


def test_busy_port_is_reported_and_nothing_starts():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["server", "start", "--prefect-port", str(port), "--mlflow-port", str(servers.free_port())])
    assert result.exit_code == 2
    assert f"port {port} on 127.0.0.1 is in use" in result.output and "--prefect-port" in result.output
    assert not any(entry.running for entry in servers.status().values())


def test_serve_without_a_server_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "metaauto server start" in result.output
