"""``metaauto server start|stop|status`` and ``metaauto serve``: the Prefect UI as the front door.

``server`` manages the two local servers (:mod:`metaauto.platform.servers`); ``serve`` registers every flow in
``flows/`` as a deployment on the Prefect server and runs them until interrupted, so runs started from
the UI (or on the nightly schedule) execute in this process's environment.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import typer

from metaauto.platform import servers
from metaauto.cli.errors import friendly_errors as friendly
from metaauto.errors import MetaautoError

server_app = typer.Typer(
    name="server",
    help="Start, stop or inspect the local Prefect and MLflow servers (stores under the project home).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: the nightly schedule of the main job (UTC)
NIGHTLY_CRON = "0 2 * * *"
MAIN_FLOW = "meta-pipeline"


def _print_urls(state: dict[str, dict]) -> None:
    prefect, mlflow = state["prefect"], state["mlflow"]
    typer.echo(f"Prefect UI: {prefect['url']}   (API {prefect['api_url']})")
    typer.echo(f"MLflow UI:  {mlflow['url']}")
    typer.echo("\nto use them from this shell:")
    typer.echo(f"  export PREFECT_API_URL={prefect['api_url']}")
    typer.echo(f"  export MLFLOW_TRACKING_URI={mlflow['url']}")
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
    """Terminate both servers (their whole process groups)."""
    for name, was_running in servers.stop().items():
        typer.echo(f"{name}: {'stopped' if was_running else 'not running'}")


@server_app.command("status")
@friendly
def server_status(json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout.")) -> None:
    """Whether each server runs and answers its health check; exit status 1 when one does not."""
    import json

    state = servers.status()
    if json_output:
        typer.echo(json.dumps(state, indent=2))
    else:
        for name, entry in state.items():
            if entry["running"]:
                health = "healthy" if entry["healthy"] else "NOT answering its health check"
                typer.echo(f"{name}: running at {entry['url']} (pid {entry['pid']}, {health}); log {entry['log']}")
            else:
                typer.echo(f"{name}: not running")
    if not all(entry["healthy"] for entry in state.values()):
        raise typer.Exit(code=1)


def _adopt_local_servers() -> None:
    """Point unset ``PREFECT_API_URL`` / ``MLFLOW_TRACKING_URI`` at the servers ``server start`` recorded."""
    state = servers.status()
    if not os.environ.get("PREFECT_API_URL") and state["prefect"]["healthy"]:
        os.environ["PREFECT_API_URL"] = state["prefect"]["api_url"]
    if not os.environ.get("MLFLOW_TRACKING_URI") and state["mlflow"]["healthy"]:
        os.environ["MLFLOW_TRACKING_URI"] = state["mlflow"]["url"]
    if not os.environ.get("PREFECT_API_URL"):
        raise servers.ServerError(
            "no Prefect server: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api) or run `metaauto server start`"
        )


def all_flows() -> list[Any]:
    """Every flow of the product, main job last."""
    try:
        from flows import evaluate_and_promote, ingest_collection, meta_pipeline, search_learners, transfer_to_domain
    except ImportError as exc:
        raise MetaautoError(f"cannot import the flows package ({exc}); run from the repository root") from exc
    return [ingest_collection, search_learners, evaluate_and_promote, transfer_to_domain, meta_pipeline]


def deployments(nightly_cron: Optional[str] = NIGHTLY_CRON) -> list[Any]:
    """One deployment per flow: ``meta-pipeline/nightly`` on a schedule, ``<flow>/on-demand`` for the others.

    Parameters default to the flows' own typed defaults (the default collection), which the UI shows
    pre-filled in the run form.
    """
    result = []
    for flow in all_flows():
        if flow.name == MAIN_FLOW:
            result.append(flow.to_deployment(
                name="nightly", cron=nightly_cron, tags=["metaauto"],
                description="The main job: ingest, search, evaluate and promote, nightly on the default collection.",
            ) if nightly_cron else flow.to_deployment(name="nightly", tags=["metaauto"]))
        else:
            result.append(flow.to_deployment(name="on-demand", tags=["metaauto"]))
    return result


def serve(
    nightly_cron: str = typer.Option(NIGHTLY_CRON, "--cron", help="Schedule of meta-pipeline/nightly (UTC cron); 'none' for no schedule."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Flow runs executed at once at most."),
) -> None:
    """Register every flow as a deployment on PREFECT_API_URL's server and execute their runs (blocks; Ctrl-C stops).

    Without PREFECT_API_URL / MLFLOW_TRACKING_URI the servers started by `metaauto server start` are used.
    """
    _adopt_local_servers()
    cron = None if nightly_cron.lower() == "none" else nightly_cron
    from prefect import serve as prefect_serve

    built = deployments(cron)
    typer.echo(f"serving {len(built)} deployments on {os.environ['PREFECT_API_URL']}: "
               + ", ".join(f"{d.flow_name}/{d.name}" for d in built), err=True)
    prefect_serve(*built, limit=limit, print_starting_message=True)


def register(app: typer.Typer) -> None:
    """Add ``server`` and ``serve`` to the main CLI."""
    app.add_typer(server_app, name="server")
    app.command("serve")(friendly(serve))
