"""``metaauto pipeline``: run the ``meta-pipeline`` flow once, without a Prefect server.

The flow is loaded from its entrypoint (:mod:`metaauto.platform.deployments`) and given JSON parameters,
exactly what a run of the ``meta-pipeline/nightly`` deployment gets.

Prefect runs it in ephemeral mode (a temporary local API for the run's states and artifacts) unless
``PREFECT_API_URL`` names a server, in which case the run shows up there. The defaults are sized for a
2-core CPU (a few short search trials on the published defaults, then the best configuration trained
for 600 meta-updates and meta-tested on 600 episodes with both baselines) and end with a registered
champion ``omniglot-5w1s``.

The transfer domains have their own defaults (:func:`metaauto.evaluation.domains.pipeline_defaults`):
``--collection movielens`` registers ``movielens-coldstart``, ``--collection heart-disease -o
target_site=SITE`` registers ``heart-disease-SITE``, and both end by adapting the champion to the
meta-test users or the held-out site and reporting it against the domain's baselines. A table of your
own (``--collection my.csv -o task_col=hospital -o label_col=outcome``) takes the same path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import typer

from metaauto.cli.common import DataDir, Json, parse_options, split_names
from metaauto.errors import MetaautoError


# Long by its typer signature (one line per option); the body maps the options onto the flow's parameters.
def pipeline(
    collection: str = typer.Option("omniglot", "--collection", "-c", help="Registered collection (omniglot, sinusoid) or a .csv/.parquet table."),
    data_dir: DataDir = None,
    collection_option: Optional[list[str]] = typer.Option(None, "--collection-option", "-o", help="Collection option KEY=VALUE (repeatable)."),
    ways: Optional[int] = typer.Option(None, help="Classes per episode (ignored for regression; default 5, heart-disease 2)."),
    shots: Optional[int] = typer.Option(None, help="Support examples per class (per task for regression; default 1, movielens 10, heart-disease 5)."),
    queries: Optional[int] = typer.Option(None, help="Query examples per class (per task for regression; default 15, movielens 10, heart-disease 3)."),
    trials: int = typer.Option(3, help="Search trials (the published defaults of the searched learners come first)."),
    algorithms: Optional[str] = typer.Option(None, help="Comma-separated learners to search (default: protonet,anil,fomaml on "
                                             "omniglot and heart-disease, anil,fomaml,metasgd on movielens, all that fit otherwise)."),
    budget_steps: int = typer.Option(100, "--budget-steps", help="Meta-updates per search trial at most."),
    budget_s: Optional[float] = typer.Option(60.0, "--budget-s", help="Training seconds per search trial at most (0: no limit)."),
    val_tasks: int = typer.Option(50, help="Validation episodes per trial report."),
    final_steps: int = typer.Option(5000, help="Meta-updates of the best configuration's final training at most."),
    final_seconds: Optional[float] = typer.Option(150.0, help="Training seconds of the final training at most (0: no limit)."),
    eval_tasks: int = typer.Option(600, help="Meta-test episodes of the final evaluation."),
    pretrain_steps: int = typer.Option(1000, help="Pre-training steps of the pre-train baseline."),
    scratch_steps: int = typer.Option(50, help="Training steps of the scratch baseline on each support set."),
    parallelism: int = typer.Option(1, help="Trials at once (a journal storage is used when > 1)."),
    storage: Optional[str] = typer.Option(None, help="Study storage (default $METAAUTO_SEARCH_STORAGE, else SQLite under the project home)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name; an existing study is resumed."),
    seed: int = typer.Option(0, help="Seeds the sampler, initialisations and episodes."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    register: Optional[str] = typer.Option(None, "--register", help="Registered model name (default: movielens-coldstart, "
                                           "heart-disease-<target_site>, else <collection or file stem>-<ways>w<shots>s)."),
    transfer: Optional[bool] = typer.Option(None, "--transfer/--no-transfer", help="Adapt the champion to the collection's "
                                            "meta-test users or held-out site and report it against the domain's baselines "
                                            "(default: on for movielens and heart-disease)."),
    transfer_tasks: int = typer.Option(100, "--transfer-tasks", help="Transfer: meta-test users (movielens) or support draws (heart-disease)."),
    experiment: str = typer.Option("metaauto", help="MLflow experiment."),
    json_output: Json = False,
) -> None:
    """Run the whole meta-pipeline once: ingest, search, meta-test and promote (Prefect flow, no server needed)."""
    from metaauto.evaluation.domains import DOMAINS, default_model_name, pipeline_defaults

    defaults = pipeline_defaults(collection, parse_options(collection_option))
    ways, shots = ways or defaults.get("ways") or 5, shots or defaults.get("shots", 1)
    data = {"collection": collection, "data_dir": str(data_dir) if data_dir else None, "options": defaults["options"],
            "ways": ways, "shots": shots, "queries": queries or defaults.get("queries", 15)}
    if algorithms is None:
        chosen = defaults.get("algorithms") or (["protonet", "anil", "fomaml"] if collection == "omniglot" else None)
    else:
        chosen = split_names(algorithms)
    name = register or default_model_name(collection, defaults["options"], ways, shots)
    domain = collection.lower() in DOMAINS
    if study is None and (domain or Path(collection).suffix.lower() in (".csv", ".parquet", ".pq")):
        study = name  # one study per held-out site, and per table file (every table's collection is named "table")
    transfer_params = ({"model_uri": f"models:/{name}@champion", "target": data, "tasks": transfer_tasks, "seed": seed,
                        "pretrain_steps": pretrain_steps, "device": device} if (domain if transfer is None else transfer) else None)
    params = {
        "data": data,
        "search": {"trials": trials, "algorithms": chosen, "max_steps": budget_steps, "trial_seconds": budget_s or None,
                   "val_every": min(50, budget_steps), "val_tasks": val_tasks, "parallelism": parallelism,
                   "storage": storage, "study_name": study, "seed": seed, "device": device},
        "evaluation": {"final_steps": final_steps, "final_seconds": final_seconds or None, "tasks": eval_tasks,
                       "pretrain_steps": pretrain_steps, "scratch_steps": scratch_steps, "register_as": name},
        "transfer": transfer_params,
        "experiment": experiment,
    }
    result = _run_pipeline(params)
    if json_output:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _print_pipeline(result)


def _run_pipeline(params: dict[str, Any]) -> Any:
    """Run ``meta-pipeline`` in this process with ``params`` as a deployment run would get them (JSON, checked
    against the flow's parameter models first)."""
    from prefect.exceptions import ParameterTypeError

    from metaauto.platform.deployments import MAIN_FLOW, deployment, load_flow

    # the ephemeral API server starts as a subprocess; on a busy machine Prefect's 20 s default is too short
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # nothing leaves the machine: the ephemeral server would otherwise try to send usage telemetry
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    flow = load_flow(deployment(MAIN_FLOW).entrypoint)
    try:
        flow.validate_parameters({"params": params})
    except ParameterTypeError as exc:
        raise MetaautoError(f"invalid pipeline parameters: {exc}") from None
    return flow(params=params)


def _print_pipeline(result: Any) -> None:
    """The pipeline's outcome (a ``flows.pipeline.PipelineResult``) in a few lines."""
    search, final, look = result.search, result.evaluation.final.summary(), result.where_to_look
    typer.echo(f"study {search.study_name}: {search.states}; best trial #{search.best_trial} "
               f"{search.best_params.get('algorithm')} (validation {search.best_value:.4g})")
    meta_test = final.meta_test
    typer.echo(f"meta-test {meta_test.metric} over {meta_test.tasks} episodes (95% CI): "
               + ", ".join(f"{n} {e.mean:.4g} +- {e.ci95:.4g}" for n, e in meta_test.scores.items()))
    if final.promotion is not None:
        typer.echo(final.promotion.describe())
    if result.transfer:
        _print_transfer(result.transfer)
    typer.echo(f"MLflow UI:  {look.mlflow_ui}")
    typer.echo(f"model URI:  {look.model_uri}")
    typer.echo(f"downstream: {look.snippet}")


def _print_transfer(transferred: dict[str, Any]) -> None:
    """The domain's report, whose columns depend on the domain."""
    typer.echo(f"transfer to {transferred.get('target', transferred['collection'])}"
               + (f" at K={transferred['shots']}" if "shots" in transferred else "") + ":")
    metrics = transferred.get("metrics") or [transferred["metric"]]
    for row in transferred["results"]:
        typer.echo(f"  {row['method']:<26} " + "  ".join(
            f"{m} {row[m]:.4f} +- {row.get(m + '_ci95', row.get('ci95', 0.0)):.4f}" for m in metrics))
    if "beats_best_baseline" in transferred:
        typer.echo("  beats the best baseline: " + ", ".join(
            f"{m} {'yes' if ok else 'no'} ({transferred['best_baseline'][m]})" for m, ok in transferred["beats_best_baseline"].items()))
