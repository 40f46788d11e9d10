"""``metaauto pipeline``: run the ``meta-pipeline`` flow once, without a Prefect server.

Prefect runs it in ephemeral mode (a temporary local API for the run's states and artifacts) unless
``PREFECT_API_URL`` names a server, in which case the run shows up there. The defaults are sized for a
2-core CPU (a few short search trials on the published defaults, then the best configuration trained
for 600 meta-updates and meta-tested on 600 episodes with both baselines) and end with a registered
champion ``omniglot-5w1s``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer


def _import_flows() -> Any:
    """``flows`` is installed with the project; a source checkout installed before it existed finds it next to ``metaauto``."""
    try:
        import flows
    except ImportError:
        root = Path(__file__).resolve().parents[1]
        if not (root / "flows" / "__init__.py").exists():
            raise
        sys.path.insert(0, str(root))
        import flows
    return flows


def pipeline(
    collection: str = typer.Option("omniglot", "--collection", "-c", help="Registered collection (omniglot, sinusoid) or a .csv/.parquet table."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Dataset directory (default: $METAAUTO_DATA_DIR)."),
    collection_option: Optional[list[str]] = typer.Option(None, "--collection-option", "-o", help="Collection option KEY=VALUE (repeatable)."),
    ways: int = typer.Option(5, help="Classes per episode (ignored for regression)."),
    shots: int = typer.Option(1, help="Support examples per class (per task for regression)."),
    queries: int = typer.Option(15, help="Query examples per class (per task for regression)."),
    trials: int = typer.Option(3, help="Search trials (the published defaults of the searched learners come first)."),
    algorithms: Optional[str] = typer.Option("protonet,anil,fomaml", help="Comma-separated learners to search."),
    budget_steps: int = typer.Option(100, "--budget-steps", help="Meta-updates per search trial at most."),
    budget_s: Optional[float] = typer.Option(60.0, "--budget-s", help="Training seconds per search trial at most (0: no limit)."),
    val_tasks: int = typer.Option(50, help="Validation episodes per trial report."),
    final_steps: int = typer.Option(600, help="Meta-updates of the best configuration's final training."),
    eval_tasks: int = typer.Option(600, help="Meta-test episodes of the final evaluation."),
    pretrain_steps: int = typer.Option(1000, help="Pre-training steps of the pre-train baseline."),
    parallelism: int = typer.Option(1, help="Trials at once (a journal storage is used when > 1)."),
    storage: Optional[str] = typer.Option(None, help="Study storage (default SQLite under the project home)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name; an existing study is resumed."),
    seed: int = typer.Option(0, help="Seeds the sampler, initialisations and episodes."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    register: Optional[str] = typer.Option(None, "--register", help="Registered model name (default: <collection>-<ways>w<shots>s)."),
    experiment: str = typer.Option("metaauto", help="MLflow experiment."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Run the whole meta-pipeline once: ingest, search, meta-test and promote (Prefect flow, no server needed)."""
    from metaauto.cli import parse_options

    # the ephemeral API server starts as a subprocess; on a busy machine Prefect's 20 s default is too short
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    flows = _import_flows()
    from flows.params import CollectionParams, EvalParams, PipelineParams, SearchParams

    data = CollectionParams(collection=collection, data_dir=str(data_dir) if data_dir else None,
                            options=parse_options(collection_option), ways=ways, shots=shots, queries=queries)
    name = register or (f"{Path(collection).stem}-{ways}w{shots}s")
    params = PipelineParams(
        data=data,
        search=SearchParams(trials=trials, algorithms=[a.strip() for a in algorithms.split(",") if a.strip()] if algorithms else None,
                            max_steps=budget_steps, trial_seconds=budget_s or None, val_every=min(50, budget_steps),
                            val_tasks=val_tasks, parallelism=parallelism, storage=storage, study_name=study, seed=seed,
                            device=device),
        evaluation=EvalParams(final_steps=final_steps, tasks=eval_tasks, pretrain_steps=pretrain_steps, register_as=name),
        experiment=experiment,
    )
    result = flows.meta_pipeline(params)
    if json_output:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    evaluation, look = result["evaluation"], result["where_to_look"]
    search = result["search"]
    typer.echo(f"study {search['study']}: {search['states']}; best trial #{search['best_trial']} "
               f"{(search['best_params'] or {}).get('algorithm')} (validation {search['best_value']:.4g})")
    meta_test = dict(evaluation["meta_test"])
    metric, tasks = meta_test.pop("metric"), meta_test.pop("tasks")
    typer.echo(f"meta-test {metric} over {tasks} episodes (95% CI): "
               + ", ".join(f"{n} {r['mean']:.4g} +- {r['ci95']:.4g}" for n, r in meta_test.items()))
    if evaluation.get("promotion"):
        typer.echo(evaluation["promotion"]["description"])
    typer.echo(f"MLflow UI:  {look['mlflow_ui']}")
    typer.echo(f"model URI:  {look['model_uri']}")
    typer.echo(f"downstream: {look['snippet']}")
