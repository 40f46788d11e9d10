"""``metaauto search``: learners and their hyperparameters with Optuna; meta-test, register and promote the best."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from metaauto.cli.common import (
    Collection,
    CollectionOptions,
    DataDir,
    DataSource,
    Device,
    Json,
    emit,
    split_names,
)


def _trial_reporter(progress: bool, trials: int) -> Callable[[Any, Any], None]:
    """One line on stderr per finished trial (``--progress``)."""

    def report(study: Any, trial: Any) -> None:
        if not progress:
            return
        value = f" value {trial.value:.4g}" if trial.value is not None else ""
        best = f"; best {study.best_value:.4g} (#{study.best_trial.number})" if any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)) else ""
        reason = trial.user_attrs.get("metaauto.reason") or ""
        typer.echo(f"[trial {trial.number}/{trials}] {trial.params.get('algorithm', '?')} {trial.state.name}{value} {reason}{best}", err=True)

    return report


def search(
    collection: Collection,
    data_dir: DataDir = None,
    collection_option: CollectionOptions = None,
    ways: int = typer.Option(5, help="Classes per episode (ignored for regression)."),
    shots: int = typer.Option(1, help="Support examples per class (per task for regression)."),
    queries: int = typer.Option(15, help="Query examples per class (per task for regression)."),
    trials: int = typer.Option(20, help="Finished trials the study runs to, in total (across workers and resumptions)."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting trials after this many seconds (this process)."),
    algorithms: Optional[str] = typer.Option(None, help="Comma-separated learners to search (default: all that fit the task type)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Fix or narrow a parameter: maml.inner_lr=0.1, meta_lr=1e-4:1e-3, protonet.distance=euclidean,cosine (repeatable)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON file of parameter overrides (--set wins over it)."),
    pruner: str = typer.Option("hyperband", help="Stops hopeless trials early."),
    max_steps: int = typer.Option(1000, help="Meta-updates per trial at most."),
    trial_seconds: Optional[float] = typer.Option(None, help="Training seconds per trial at most."),
    val_every: int = typer.Option(100, help="Validate and report to the pruner every N meta-updates."),
    val_tasks: int = typer.Option(100, help="Fixed validation episodes."),
    backbone: Optional[str] = typer.Option(None, help="Backbone (default: conv4 for images, mlp otherwise)."),
    seed: int = typer.Option(0, help="Seeds the sampler, initialisations and episodes."),
    device: Device = "auto",
    storage: Optional[str] = typer.Option(None, help="Study storage: default $METAAUTO_SEARCH_STORAGE, else SQLite under the project home; 'journal[:PATH]'; or postgresql://user@host/db."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: <collection>-<ways>w<shots>s)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an existing study (after a crash, or with more trials)."),
    worker: bool = typer.Option(False, "--worker", help="Join an existing study and only run trials."),
    warm_start: bool = typer.Option(True, "--warm-start/--no-warm-start", help="Also enqueue the best configurations of the most similar past studies (knowledge base)."),
    heartbeat_interval: int = typer.Option(30, help="Database storages: seconds between a running trial's heartbeats."),
    grace_period: int = typer.Option(120, help="Database storages: a trial silent this long is failed and retried once."),
    track: bool = typer.Option(True, "--track/--no-track", help="Nested MLflow runs per trial, plots and the final evaluation."),
    register: Optional[str] = typer.Option(None, "--register", help="Register the best configuration as NAME; promote it if it beats the champion."),
    eval_tasks: int = typer.Option(600, help="Meta-test episodes of the final evaluation."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Score the baselines in the final evaluation."),
    pretrain_steps: int = typer.Option(1000, help="Pre-training steps of the pre-train baseline."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="One line per finished trial on stderr."),
    json_output: Json = False,
) -> None:
    """Search learners and their hyperparameters with Optuna; meta-test, register and promote the best."""
    import optuna

    from metaauto.search import Budget, load_overrides, parse_overrides, run_search

    coll = DataSource.from_cli(collection, data_dir, collection_option).load()
    overrides = {**(load_overrides(config) if config else {}), **parse_overrides(set_)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evaluation = None
    if track:
        from metaauto.tracking import EvalSettings

        evaluation = EvalSettings(tasks=eval_tasks, seed=seed, baselines=baselines, pretrain_steps=pretrain_steps)
    result = run_search(
        coll, ways=ways, shots=shots, queries=queries, trials=trials, timeout=timeout, algorithms=split_names(algorithms),
        overrides=overrides, budget=Budget(max_steps=max_steps, seconds=trial_seconds, val_every=val_every, val_tasks=val_tasks),
        pruner=pruner, storage=storage, study_name=study, resume=resume, worker=worker, backbone=backbone, seed=seed,
        device=device, track=track, evaluation=evaluation, register_as=register, on_trial=_trial_reporter(progress, trials),
        heartbeat_interval=heartbeat_interval, grace_period=grace_period, warm_start=warm_start,
    )
    emit(result.to_dict(), json_output, lambda _: _print_search(result))


def _print_search(result: Any) -> None:
    states = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.states.items()))
    typer.echo(f"study {result.study_name} ({result.storage}): {states}")
    if result.best_trial is None:
        typer.echo("no trial completed")
        return
    typer.echo(f"best trial #{result.best_trial}: value {result.best_value:.4g} with {json.dumps(result.best_params)}")
    if result.final is not None:
        final = result.final.summary()
        figures = ", ".join(f"{name} {e.mean:.4g} +- {e.ci95:.4g}" for name, e in final.meta_test.scores.items())
        typer.echo(f"meta-test {final.meta_test.metric} over {final.meta_test.tasks} episodes (95% CI): {figures}")
        typer.echo(f"MLflow parent run {result.parent_run_id}; best run {final.run_id}; model {final.model_uri}")
        if final.promotion is not None:
            typer.echo(final.promotion.describe())
