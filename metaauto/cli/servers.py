"""``metaauto server start|stop|status``, ``metaauto serve`` and ``metaauto dashboard``: the UIs.

``server`` manages the two local servers (:mod:`metaauto.platform.servers`); ``serve`` registers the flows
of ``flows/`` as deployments (:mod:`metaauto.platform.deployments`) on the Prefect server and runs them
until interrupted, so runs started from the UI (or on the nightly schedule) execute in this process's
environment.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import typer

from metaauto.cli.errors import friendly_errors as friendly
from metaauto.platform import servers
from metaauto.platform.deployments import NIGHTLY_CRON

server_app = typer.Typer(
    name="server",
    help="Start, stop or inspect the local Prefect and MLflow servers (stores under the project home).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_urls(state: dict[str, servers.ServerStatus]) -> None:
    prefect, mlflow = state["prefect"], state["mlflow"]
    typer.echo(f"Prefect UI: {prefect.url}   (API {prefect.api_url})")
    typer.echo(f"MLflow UI:  {mlflow.url}")
    typer.echo("\nto use them from this shell:")
    typer.echo(f"  export PREFECT_API_URL={prefect.api_url}")
    typer.echo(f"  export MLFLOW_TRACKING_URI={mlflow.url}")
    typer.echo("then `metaauto serve` registers the deployments; `metaauto server stop` ends both servers.")


@server_app.command("start")
@friendly
def server_start(
    host: str = typer.Option(servers.DEFAULT_HOST, help="Interface both servers bind to."),
    prefect_port: int = typer.Option(servers.DEFAULT_PREFECT_PORT, "--prefect-port", help="Prefect server port."),
    mlflow_port: int = typer.Option(servers.DEFAULT_MLFLOW_PORT, "--mlflow-port", help="MLflow server port."),
    timeout: float = typer.Option(180.0, help="Seconds to wait for both health checks."),
) -> None:
    """Start both servers detached; returns once both answer their health checks and prints the URLs."""
    servers.start(host=host, prefect_port=prefect_port, mlflow_port=mlflow_port, timeout=timeout)
    _print_urls(servers.status())
    typer.echo(f"logs and pid files: {servers.servers_dir()}")


@server_app.command("stop")
@friendly
def server_stop() -> None:
    """Terminate both servers (with every process they started)."""
    for name, was_running in servers.stop().items():
        typer.echo(f"{name}: {'stopped' if was_running else 'not running'}")


@server_app.command("status")
@friendly
def server_status(json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout.")) -> None:
    """Whether each server runs and answers its health check; exit status 1 when one does not."""
    state = servers.status()
    if json_output:
        typer.echo(json.dumps({name: entry.to_dict() for name, entry in state.items()}, indent=2))
    else:
        for name, entry in state.items():
            if entry.running:
                health = "healthy" if entry.healthy else "NOT answering its health check"
                typer.echo(f"{name}: running at {entry.url} (pid {entry.pid}, {health}); log {entry.log}")
            else:
                typer.echo(f"{name}: not running")
    if not all(entry.healthy for entry in state.values()):
        raise typer.Exit(code=1)


def _adopt_local_servers() -> None:
    """Point unset ``PREFECT_API_URL`` / ``MLFLOW_TRACKING_URI`` at the servers ``server start`` recorded."""
    state = servers.status()
    if not os.environ.get("PREFECT_API_URL") and state["prefect"].healthy:
        os.environ["PREFECT_API_URL"] = state["prefect"].api_url
    if not os.environ.get("MLFLOW_TRACKING_URI") and state["mlflow"].healthy:
        os.environ["MLFLOW_TRACKING_URI"] = state["mlflow"].url
    if not os.environ.get("PREFECT_API_URL"):
        raise servers.ServerError(
            "no Prefect server: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api) or run `metaauto server start`"
        )


def serve(
    nightly_cron: str = typer.Option(NIGHTLY_CRON, "--cron", help="Schedule of meta-pipeline/nightly (UTC cron); 'none' for no schedule."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Flow runs executed at once at most."),
) -> None:
    """Register every flow as a deployment on PREFECT_API_URL's server and execute their runs (blocks; Ctrl-C stops).

    Without PREFECT_API_URL / MLFLOW_TRACKING_URI the servers started by `metaauto server start` are used.
    """
    from prefect import serve as prefect_serve

    from metaauto.platform.deployments import served

    _adopt_local_servers()
    built = served(None if nightly_cron.lower() == "none" else nightly_cron)
    typer.echo(f"serving {len(built)} deployments on {os.environ['PREFECT_API_URL']}: "
               + ", ".join(f"{d.flow_name}/{d.name}" for d in built), err=True)
    prefect_serve(*built, limit=limit, print_starting_message=True)


def dashboard(
    port: int = typer.Option(8501, help="Port to serve the dashboard on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; loopback by default (see infra/README.md before exposing it)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage for the study explorer (default METAAUTO_SEARCH_STORAGE, else the project's SQLite)."),
) -> None:
    """Open the web dashboard: leaderboard, study explorer, try a champion (reads MLflow and the Optuna storage)."""
    import importlib.util
    import sys

    from metaauto.config import SEARCH_STORAGE_ENV as STORAGE_ENV

    app_file = importlib.util.find_spec("metaauto.dashboard.app").origin
    env = dict(os.environ)
    if storage:
        env[STORAGE_ENV] = storage
    command = [sys.executable, "-m", "streamlit", "run", str(app_file), "--server.address", host, "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    typer.echo(f"dashboard on http://{host}:{port}", err=True)
    sys.stdout.flush()
    # become the Streamlit server (no child left behind when this process is stopped)
    os.execve(sys.executable, command, env)
