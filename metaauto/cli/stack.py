"""``metaauto stack up|down|status|env|add-workers|worker``: the PostgreSQL-backed scale-out stack (:mod:`metaauto.platform.stack`)."""

from __future__ import annotations

import json
import os
from typing import Literal, Optional

import typer

from metaauto.cli.choices import ChoiceCommand
from metaauto.cli.errors import friendly_errors as friendly
from metaauto.platform import stack, workers
from metaauto.platform.servers import DEFAULT_HOST

stack_app = typer.Typer(
    name="stack",
    help="Start, stop or inspect the scale-out stack: MLflow + Prefect on PostgreSQL, N task workers, a process work pool.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_status(state: dict) -> None:
    if not state.get("prefect"):
        typer.echo("stack: not up")
        return
    prefect, mlflow = state["prefect"], state["mlflow"]
    typer.echo(f"Prefect: {prefect['url']}  (API {prefect['api_url']}; pid {prefect['pid']}, "
               f"{'healthy' if prefect['healthy'] else 'NOT healthy'})")
    typer.echo(f"MLflow:  {mlflow['url']}  (pid {mlflow['pid']}, {'healthy' if mlflow['healthy'] else 'NOT healthy'}; "
               f"artifacts served from {state['artifacts']})")
    typer.echo(f"stores:  mlflow {state['stores']['mlflow_db']}, prefect {state['stores']['prefect_db']}, "
               f"optuna {state['stores']['optuna_db']}")
    typer.echo(f"pool {state['pool']}, deployment {state['deployment']}; {len(state['workers'])} workers:")
    for w in state["workers"]:
        kind = "task worker" if w["kind"] == "tasks" else f"process worker on {state['pool']}"
        typer.echo(f"  {w['name']} ({kind}): pid {w['pid']}, {'running' if w['running'] else 'NOT running'}"
                   f"{', online' if w['online'] else ', not online'}; log {w['log']}")
    typer.echo("\nclients and workers elsewhere set (`metaauto stack env`):")
    for key, value in state["env"].items():
        typer.echo(f"  export {key}={value}")


@stack_app.command("up")
@friendly
def stack_up(
    workers: int = typer.Option(2, "--workers", "-n", min=0, help="Long-lived task workers (they take searches' trials) to start here."),
    pool_workers: int = typer.Option(1, "--pool-workers", min=0, help="Process workers on the work pool (a new process per flow run)."),
    slots: int = typer.Option(1, "--slots", min=1, help="Worker runs (so trials) each worker executes at once."),
    postgres: Optional[str] = typer.Option(None, "--postgres", help=f"PostgreSQL server URL (default ${stack.POSTGRES_ENV}, else {stack.DEFAULT_POSTGRES})."),
    prefix: str = typer.Option(stack.DEFAULT_PREFIX, "--db-prefix", help="Databases PREFIX_mlflow, PREFIX_prefect, PREFIX_optuna (created when missing)."),
    host: str = typer.Option(DEFAULT_HOST, help="Interface the servers bind to (loopback unless other machines must reach them)."),
    prefect_port: int = typer.Option(stack.DEFAULT_STACK_PREFECT_PORT, "--prefect-port"),
    mlflow_port: int = typer.Option(stack.DEFAULT_STACK_MLFLOW_PORT, "--mlflow-port"),
    pool: str = typer.Option(stack.DEFAULT_POOL, "--pool", help="Process work pool the workers poll."),
    gpus: int = typer.Option(0, "--gpus", min=0, help="Slots of the Prefect global concurrency limit GPU trials occupy (0: no limit)."),
    gpu_limit: str = typer.Option("gpu", "--gpu-limit", help="Name of that limit (search param gpu_concurrency_limit)."),
    timeout: float = typer.Option(180.0, help="Seconds to wait for each server's health check."),
) -> None:
    """Create the databases, start MLflow and Prefect on them, the work pool, the worker deployment and the workers."""
    stack.up(workers=workers, pool_workers=pool_workers, postgres=postgres, prefix=prefix, host=host, prefect_port=prefect_port, mlflow_port=mlflow_port,
             pool=pool, slots=slots, gpus=gpus, gpu_limit=gpu_limit, timeout=timeout)
    _print_status(stack.status())
    typer.echo(f"logs and state: {stack.stack_dir()}")


@stack_app.command("down")
@friendly
def stack_down(drop: bool = typer.Option(False, "--drop-databases", help="Also drop the databases the stack created.")) -> None:
    """Stop the workers (with their flow runs), Prefect and MLflow; fails if a process or a port is left."""
    result = stack.down(drop=drop)
    typer.echo(f"stopped: {', '.join(result['stopped']) or 'nothing was running'}")
    if result["dropped"]:
        typer.echo(f"dropped databases: {', '.join(result['dropped'])}")


@stack_app.command("status")
@friendly
def stack_status(json_output: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """URLs, stores, worker pids; exit status 1 unless every process runs and both servers are healthy."""
    state = stack.status()
    if json_output:
        typer.echo(json.dumps(state, indent=2))
    else:
        _print_status(state)
    if not state["up"]:
        raise typer.Exit(code=1)


@stack_app.command("env")
@friendly
def stack_env() -> None:
    """`export` lines pointing a shell (or a worker on another machine) at the running stack."""
    state = stack.read_state()
    if state is None:
        raise stack.StackError("no stack is up; run `metaauto stack up` first")
    for key, value in state.env().items():
        typer.echo(f"export {key}={value}")


@stack_app.command("configure")
@friendly
def stack_configure(
    pool: str = typer.Option(stack.DEFAULT_POOL, "--pool", help="Process work pool to create (kept if it exists)."),
    gpus: int = typer.Option(0, "--gpus", min=0, help="Slots of the GPU global concurrency limit (0: none)."),
    gpu_limit: str = typer.Option("gpu", "--gpu-limit"),
) -> None:
    """On the Prefect server at PREFECT_API_URL (compose, Kubernetes, a server you run): the work pool, the
    task runs' storage block and the search-worker deployment that `stack up` creates on its own server."""
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        raise stack.StackError("set PREFECT_API_URL to the Prefect server to configure")
    deployment = stack.configure_prefect(api, pool, gpus, gpu_limit)
    typer.echo(f"configured {api}: pool {pool}, block {workers.TASK_STORAGE_BLOCK} -> {stack.stack_dir() / 'task-runs'}, "
               f"deployment {deployment}")


Kind = Literal[workers.KINDS]  # type: ignore[valid-type]
_KIND = typer.Option("tasks", "--kind", help="tasks: a long-lived task worker (searches' trials); pool: a process "
                                           "worker on the work pool (a new process per flow run).")


@stack_app.command("add-workers", cls=ChoiceCommand)
@friendly
def stack_add_workers(count: int = typer.Argument(1, min=1), slots: Optional[int] = typer.Option(None, "--slots", min=1),
                      kind: Kind = _KIND) -> None:
    """Start more local workers on the running stack."""
    for worker in stack.add_workers(count, slots, kind=kind):
        typer.echo(f"{worker.name}: pid {worker.pid}, log {worker.log}")


@stack_app.command("worker", cls=ChoiceCommand)
@friendly
def stack_worker(
    pool: str = typer.Option(stack.DEFAULT_POOL, "--pool"),
    slots: int = typer.Option(1, "--slots", min=1),
    name: Optional[str] = typer.Option(None, "--name", help="Process worker name (default HOST-worker-PID; a task worker is HOST-PID)."),
    kind: Kind = _KIND,
) -> None:
    """Run one worker in the foreground, on any machine: PREFECT_API_URL, MLFLOW_TRACKING_URI and
    METAAUTO_SEARCH_STORAGE (from `metaauto stack env` on the stack's machine) say where the servers are."""
    missing = [k for k in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", workers.SEARCH_STORAGE_ENV) if not os.environ.get(k)]
    if missing:
        raise stack.StackError(f"set {', '.join(missing)} first (`metaauto stack env` on the stack's machine prints them)")
    import socket

    env = workers.worker_env(os.environ["PREFECT_API_URL"], os.environ["MLFLOW_TRACKING_URI"],
                             os.environ[workers.SEARCH_STORAGE_ENV], stack.stack_dir() / "prefect")
    command = workers.command(kind, slots, pool, name or f"{socket.gethostname().split('.')[0]}-worker-{os.getpid()}")
    os.execvpe(command[0], command, env)
