"""The ``metaauto`` command line.

Each subcommand is a thin layer over the library: it builds objects from options, calls one library
function, and reports. Conventions every subcommand follows (and new ones -- search, pipeline, serve,
register -- should too):

* ``--json`` prints exactly one JSON document on stdout; progress bars and warnings go to stderr, so
  ``metaauto train ... --json | jq`` works.
* Bad input (a :class:`~metaauto.errors.MetaautoError`: unknown collection, missing data, impossible
  hyperparameters, mismatched checkpoint) prints ``error: <message>`` on stderr and exits with status 2,
  without a traceback; anything else is a bug and keeps its traceback.
* Options that name data (``--data-dir``) fall back to ``METAAUTO_DATA_DIR``; outputs default to the
  project home (``METAAUTO_HOME``), never to a path that depends on the current directory.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import typer

from metaauto.cli_errors import friendly_errors
from metaauto.config import home_dir
from metaauto.errors import CollectionError, LearnerError

app = typer.Typer(
    name="metaauto",
    help="AutoML for meta-learning: train and evaluate few-shot learners on task collections.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


RUN_SUMMARY = "run.json"
MODEL_SUBDIR = "model"
CHECKPOINT_SUBDIR = "checkpoints"


def emit(document: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], None]) -> None:
    if as_json:
        typer.echo(json.dumps(document, indent=2, default=str))
    else:
        human(document)


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["task_col=user", "k=3"]`` -> ``{"task_col": "user", "k": 3}`` (values parsed as JSON when they can be)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CollectionError(f"collection option {pair!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write atomically, so a crash never leaves half a summary behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------- train


@app.command()
@friendly_errors
def train(
    collection: str = typer.Option(..., "--collection", "-c", help="Registered collection (omniglot, sinusoid) or a .csv/.parquet table."),
    algorithm: str = typer.Option(..., "--algorithm", "-a", help="Learner name, e.g. maml, fomaml, reptile, metasgd, anil, protonet."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Dataset directory (default: $METAAUTO_DATA_DIR)."),
    collection_option: Optional[list[str]] = typer.Option(None, "--collection-option", "-o", help="Collection option KEY=VALUE (repeatable), e.g. task_col=user."),
    ways: int = typer.Option(5, help="Classes per episode (ignored for regression)."),
    shots: int = typer.Option(1, help="Support examples per class (per task for regression)."),
    queries: int = typer.Option(15, help="Query examples per class (per task for regression)."),
    meta_steps: int = typer.Option(1000, help="Meta-updates."),
    meta_batch_size: int = typer.Option(16, help="Tasks per meta-update."),
    meta_lr: float = typer.Option(1e-3, help="Outer learning rate."),
    optimizer: str = typer.Option("adam", help="adam, adamw or sgd."),
    lr_schedule: str = typer.Option("none", help="none or cosine."),
    grad_clip: Optional[float] = typer.Option(None, help="Clip the meta-gradient norm."),
    backbone: Optional[str] = typer.Option(None, help="conv4 or mlp (default: conv4 for images, mlp otherwise)."),
    width: Optional[int] = typer.Option(None, help="conv4 channels / mlp hidden size."),
    inner_lr: Optional[float] = typer.Option(None, help="Inner-loop step size (gradient learners)."),
    inner_steps: Optional[int] = typer.Option(None, help="Inner-loop steps while training (gradient learners)."),
    first_order: Optional[bool] = typer.Option(None, "--first-order/--second-order", help="MAML meta-gradient order."),
    seed: int = typer.Option(0, help="Seeds initialisation, episodes and validation tasks."),
    val_every: int = typer.Option(100, help="Validate every N steps (0: never)."),
    val_tasks: int = typer.Option(100, help="Fixed validation episodes."),
    patience: Optional[int] = typer.Option(None, help="Stop after N validations without improvement."),
    checkpoint_every: int = typer.Option(100, help="Checkpoint every N steps."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    amp: str = typer.Option("auto", help="Mixed precision: auto (bf16/fp16 on CUDA only), off, bf16, fp16."),
    output: Optional[Path] = typer.Option(None, "--output", help="Run directory (default: $METAAUTO_HOME/runs/<algorithm>-<collection>-<ways>w<shots>s-seed<seed>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run checkpointed in the output directory."),
    track: bool = typer.Option(True, "--track/--no-track", help="Log the run, its meta-test evaluation and its model to MLflow."),
    register: Optional[str] = typer.Option(None, "--register", help="Register the model as a new version of NAME; promote it to @champion if it beats the current one."),
    eval_tasks: int = typer.Option(600, help="Meta-test episodes of the tracked evaluation."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Score the scratch and pre-train baselines in the tracked evaluation."),
    pretrain_steps: int = typer.Option(1000, help="Pre-training steps of the pre-train baseline."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Meta-train a learner; saves the learner, a checkpoint and a run summary in the output directory.

    With tracking (the default) the run, its meta-test figures with baselines, its figures and its model
    go to MLflow (``MLFLOW_TRACKING_URI``, else SQLite under the project home).
    """
    from metaauto.backbones import make_backbone
    from metaauto.engine import TrainConfig, meta_train
    from metaauto.learners import LEARNERS, available_learners, learner_defaults, make_learner, save_learner
    from metaauto.tasks import load_collection

    coll = load_collection(collection, data_dir=data_dir, **parse_options(collection_option))
    if algorithm not in LEARNERS:
        raise LearnerError(f"unknown algorithm {algorithm!r}; known algorithms: {', '.join(LEARNERS)}")
    if algorithm not in available_learners(coll.task_type):
        raise LearnerError(
            f"algorithm {algorithm!r} cannot solve {coll.task_type} tasks; for collection {coll.name!r} use one of "
            f"{', '.join(available_learners(coll.task_type))}"
        )
    classification = coll.task_type == "classification"
    backbone = backbone or ("conv4" if len(coll.input_shape) == 3 else "mlp")
    metric_learner = LEARNERS[algorithm].family == "metric"
    out_features = None if metric_learner else coll.output_dim(ways if classification else None)
    explicit = {"inner_lr": inner_lr, "inner_steps": inner_steps, "first_order": first_order}
    hparams = {**learner_defaults(algorithm, coll.task_type), **{k: v for k, v in explicit.items() if v is not None}}

    torch.manual_seed(seed)
    model = make_backbone(backbone, coll.input_shape, out_features, width=width)
    learner = make_learner(algorithm, model, **hparams)

    run_dir = output or home_dir() / "runs" / f"{algorithm}-{coll.name}-{ways}w{shots}s-seed{seed}"
    config = TrainConfig(
        ways=ways if classification else None, shots=shots, queries=queries, meta_batch_size=meta_batch_size,
        meta_steps=meta_steps, meta_lr=meta_lr, optimizer=optimizer, lr_schedule=lr_schedule, grad_clip=grad_clip,
        val_every=val_every, val_tasks=val_tasks, patience=patience, seed=seed, device=device, amp=amp,
        checkpoint_dir=run_dir / CHECKPOINT_SUBDIR, checkpoint_every=checkpoint_every, resume=resume,
        progress=progress,
    )
    if register and not track:
        raise LearnerError("--register needs tracking: drop --no-track")
    tracked = None
    if track:
        from metaauto.tracking import EvalSettings, train_tracked

        evaluation = EvalSettings(tasks=eval_tasks, seed=seed, baselines=baselines, pretrain_steps=pretrain_steps)
        tracked = train_tracked(learner, coll, config, evaluation=evaluation, register_as=register)
        result = tracked.result
    else:
        result = meta_train(learner, coll, config)

    source = {
        "collection": collection,
        "collection_name": coll.name,
        "collection_options": parse_options(collection_option),
        "collection_fingerprint": coll.fingerprint,
        "task_type": coll.task_type,
        "data_dir": str(data_dir.resolve()) if data_dir is not None else None,
        "ways": config.ways,
        "shots": shots,
        "queries": queries,
    }
    model_dir = save_learner(learner.cpu(), run_dir / MODEL_SUBDIR, extra={**source, "train_digest": result.digest})
    summary = {"run_dir": str(run_dir), "model_dir": str(model_dir), **source, **result.summary()}
    write_json(run_dir / RUN_SUMMARY, summary)
    report = {k: v for k, v in summary.items() if k != "history"}
    report["validation"] = summary["history"]["val"]
    if tracked is not None:
        from metaauto.tracking.cli import tracking_summary

        report["mlflow"] = tracking_summary(tracked)
    emit(report, json_output, _print_train)


def _print_train(report: dict[str, Any]) -> None:
    best = report["best_value"]
    best_text = f"best val {report['metric']} {best:.4f} at step {report['best_step']}" if best is not None else "no validation"
    typer.echo(
        f"trained {report['learner']} on {report['collection_name']} for {report['final_step']} steps "
        f"({report['stop_reason']}, {report['wall_time_s']:.1f}s on {report['device']}); {best_text}"
    )
    typer.echo(f"saved to {report['model_dir']}")
    mlflow = report.get("mlflow")
    if not mlflow:
        return
    meta_test = dict(mlflow["meta_test"])
    metric, tasks = meta_test.pop("metric"), meta_test.pop("tasks")
    scale, unit = (100.0, "%") if metric == "accuracy" else (1.0, "")
    figures = ", ".join(f"{name} {r['mean'] * scale:.2f}{unit} +- {r['ci95'] * scale:.2f}" for name, r in meta_test.items())
    typer.echo(f"meta-test {metric} over {tasks} episodes (95% CI): {figures}")
    typer.echo(f"MLflow run {mlflow['run_id']} in {mlflow['tracking_uri']}; model {mlflow['model_uri']}")
    promotion = mlflow.get("promotion")
    if promotion:
        typer.echo(promotion["description"])
    typer.echo("\nwhere to look:")
    typer.echo(f"  MLflow UI:  mlflow ui --backend-store-uri '{mlflow['tracking_uri']}' --host 127.0.0.1 --port 5000")
    registered = mlflow.get("registered")
    if registered:
        uri = f"models:/{registered['name']}@champion"
        typer.echo(f"  champion:   {uri}")
        typer.echo(f"  downstream: import metaauto; clf = metaauto.load({uri!r}).adapt(X_support, y_support); clf.predict(X_query)")


# -------------------------------------------------------------------------------------- evaluate


def _locate_model(path: Path) -> tuple[Path, Path | None]:
    """``(learner directory, run directory or None)`` for a run directory or a saved-learner directory."""
    if (path / MODEL_SUBDIR / "learner.json").is_file():
        return path / MODEL_SUBDIR, path
    if (path / "learner.json").is_file():
        return path, path.parent if (path.parent / RUN_SUMMARY).is_file() else None
    raise LearnerError(f"{path} holds no saved learner (expected {path / MODEL_SUBDIR / 'learner.json'} or {path / 'learner.json'})")


@app.command()
@friendly_errors
def evaluate(
    model: Path = typer.Option(..., "--model", "-m", help="Run directory written by `metaauto train` (or its model/ folder)."),
    collection: Optional[str] = typer.Option(None, "--collection", "-c", help="Override the collection recorded at training."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Dataset directory (default: $METAAUTO_DATA_DIR, then the one used for training)."),
    collection_option: Optional[list[str]] = typer.Option(None, "--collection-option", "-o", help="Collection option KEY=VALUE (repeatable)."),
    split: str = typer.Option("test", help="Split to evaluate on."),
    ways: Optional[int] = typer.Option(None, help="Default: as trained."),
    shots: Optional[int] = typer.Option(None, help="Default: as trained."),
    queries: Optional[int] = typer.Option(None, help="Default: as trained."),
    tasks: int = typer.Option(600, help="Episodes to average over."),
    seed: int = typer.Option(0, help="Seeds the evaluation episodes (same seed, same episodes)."),
    batch_size: int = typer.Option(25, help="Tasks forwarded at once (memory/speed only)."),
    inner_steps: Optional[int] = typer.Option(None, help="Inner steps at test time (gradient learners; default: the learner's)."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also score the scratch and pre-train baselines on the same episodes."),
    pretrain_steps: int = typer.Option(1000, help="Pre-training steps of the pre-train baseline."),
    scratch_steps: int = typer.Option(100, help="Adam steps per task of the from-scratch baseline."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    per_task: bool = typer.Option(False, "--per-task", help="Include per-task values in the JSON output."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Mean accuracy (MSE for regression) +- 95% CI over meta-test episodes, with baselines."""
    from metaauto.evaluation import PretrainBaseline, ScratchBaseline, compare
    from metaauto.learners import load_learner, read_learner_info
    from metaauto.tasks import load_collection

    learner_dir, run_dir = _locate_model(model)
    info = read_learner_info(learner_dir)
    trained = info.get("extra", {})
    source = collection or trained.get("collection")
    if source is None:
        raise LearnerError(f"{learner_dir} does not record its collection; pass --collection")
    if data_dir is None and "METAAUTO_DATA_DIR" not in os.environ and collection is None and trained.get("data_dir"):
        data_dir = Path(trained["data_dir"])
    options = parse_options(collection_option) if collection_option else ({} if collection else trained.get("collection_options", {}))
    coll = load_collection(source, data_dir=data_dir, **options)
    if trained.get("collection_fingerprint") not in (None, coll.fingerprint):
        typer.echo(
            f"warning: evaluating on collection {coll.name!r} with fingerprint {coll.fingerprint}; the learner was "
            f"trained on fingerprint {trained['collection_fingerprint']}",
            err=True,
        )
    learner = load_learner(learner_dir)
    ways = ways if ways is not None else trained.get("ways", 5)
    shots = shots if shots is not None else trained.get("shots", 1)
    queries = queries if queries is not None else trained.get("queries", 15)
    methods = []
    if baselines:
        spec = info["backbone"]
        methods = [ScratchBaseline(spec, steps=scratch_steps, seed=seed), PretrainBaseline(spec, pretrain_steps=pretrain_steps, seed=seed)]
    comparison = compare(
        learner, coll, methods, split=split, ways=ways, shots=shots, queries=queries, tasks=tasks, seed=seed,
        batch_size=batch_size, inner_steps=inner_steps, device=device,
    )
    report = {
        "model_dir": str(learner_dir),
        "run_dir": str(run_dir) if run_dir else None,
        "learner": info["learner"],
        "collection": coll.name,
        "collection_fingerprint": coll.fingerprint,
        **comparison.to_dict(per_task=per_task),
    }
    emit(report, json_output, _print_evaluation)


def _print_evaluation(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    results = report["results"]
    first = next(iter(results.values()))
    accuracy = first["metric"] == "accuracy"
    scale = 100.0 if accuracy else 1.0
    title = (
        f"{report['learner']} on {report['collection']} ({first['split']}, "
        + (f"{first['ways']}-way " if first["ways"] else "")
        + f"{first['shots']}-shot, {first['tasks']} tasks)"
    )
    table = Table(title=title)
    table.add_column("method")
    table.add_column(f"{first['metric']}{' (%)' if accuracy else ''}", justify="right")
    table.add_column("learner - method (paired)", justify="right")
    for name, result in results.items():
        paired = report["paired_difference"].get(name)
        diff = f"{paired['mean'] * scale:+.2f} +- {paired['ci95'] * scale:.2f}" if paired else ""
        table.add_row(name, f"{result['mean'] * scale:.2f} +- {result['ci95'] * scale:.2f}", diff)
    Console(file=sys.stdout).print(table)


# ---------------------------------------------------------------------------------------- search


@app.command()
@friendly_errors
def search(
    collection: str = typer.Option(..., "--collection", "-c", help="Registered collection (omniglot, sinusoid) or a .csv/.parquet table."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Dataset directory (default: $METAAUTO_DATA_DIR)."),
    collection_option: Optional[list[str]] = typer.Option(None, "--collection-option", "-o", help="Collection option KEY=VALUE (repeatable)."),
    ways: int = typer.Option(5, help="Classes per episode (ignored for regression)."),
    shots: int = typer.Option(1, help="Support examples per class (per task for regression)."),
    queries: int = typer.Option(15, help="Query examples per class (per task for regression)."),
    trials: int = typer.Option(20, help="Finished trials the study runs to, in total (across workers and resumptions)."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting trials after this many seconds (this process)."),
    algorithms: Optional[str] = typer.Option(None, help="Comma-separated learners to search (default: all that fit the task type)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Fix or narrow a parameter: maml.inner_lr=0.1, meta_lr=1e-4:1e-3, protonet.distance=euclidean,cosine (repeatable)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON file of parameter overrides (--set wins over it)."),
    pruner: str = typer.Option("hyperband", help="hyperband, median, successive_halving or none."),
    max_steps: int = typer.Option(1000, help="Meta-updates per trial at most."),
    trial_seconds: Optional[float] = typer.Option(None, help="Training seconds per trial at most."),
    val_every: int = typer.Option(100, help="Validate and report to the pruner every N meta-updates."),
    val_tasks: int = typer.Option(100, help="Fixed validation episodes."),
    backbone: Optional[str] = typer.Option(None, help="conv4 or mlp (default: conv4 for images, mlp otherwise)."),
    seed: int = typer.Option(0, help="Seeds the sampler, initialisations and episodes."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
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
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Search learners and their hyperparameters with Optuna; meta-test, register and promote the best."""
    import optuna

    from metaauto.search import Budget, load_overrides, parse_overrides, run_search
    from metaauto.tasks import load_collection

    coll = load_collection(collection, data_dir=data_dir, **parse_options(collection_option))
    overrides = {**(load_overrides(config) if config else {}), **parse_overrides(set_)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def report_trial(study: Any, trial: Any) -> None:
        if not progress:
            return
        value = f" value {trial.value:.4g}" if trial.value is not None else ""
        best = f"; best {study.best_value:.4g} (#{study.best_trial.number})" if any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)) else ""
        reason = trial.user_attrs.get("metaauto.reason") or ""
        typer.echo(f"[trial {trial.number}/{trials}] {trial.params.get('algorithm', '?')} {trial.state.name}{value} {reason}{best}", err=True)

    evaluation = None
    if track:
        from metaauto.tracking import EvalSettings

        evaluation = EvalSettings(tasks=eval_tasks, seed=seed, baselines=baselines, pretrain_steps=pretrain_steps)
    result = run_search(
        coll, ways=ways, shots=shots, queries=queries, trials=trials, timeout=timeout,
        algorithms=[a.strip() for a in algorithms.split(",") if a.strip()] if algorithms else None, overrides=overrides,
        budget=Budget(max_steps=max_steps, seconds=trial_seconds, val_every=val_every, val_tasks=val_tasks),
        pruner=pruner, storage=storage, study_name=study, resume=resume, worker=worker, backbone=backbone, seed=seed,
        device=device, track=track, evaluation=evaluation, register_as=register, on_trial=report_trial,
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


@app.command()
@friendly_errors
def dashboard(
    port: int = typer.Option(8501, help="Port to serve the dashboard on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; loopback by default (see infra/README.md before exposing it)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage for the study explorer (default METAAUTO_SEARCH_STORAGE, else the project's SQLite)."),
) -> None:
    """Open the web dashboard: leaderboard, study explorer, try a champion (reads MLflow and the Optuna storage)."""
    from metaauto.dashboard import STORAGE_ENV

    app_file = Path(__file__).resolve().parent / "dashboard_app.py"
    env = dict(os.environ)
    if storage:
        env[STORAGE_ENV] = storage
    command = [sys.executable, "-m", "streamlit", "run", str(app_file), "--server.address", host, "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    typer.echo(f"dashboard on http://{host}:{port}", err=True)
    sys.stdout.flush()
    # become the Streamlit server (no child left behind when this process is stopped)
    os.execve(sys.executable, command, env)


def _register_tracking_commands() -> None:
    from metaauto.tracking.cli import promote, rollback

    app.command("rollback")(friendly_errors(rollback))
    app.command("promote")(friendly_errors(promote))


_register_tracking_commands()


def _register_pipeline_command() -> None:
    from metaauto.cli_pipeline import pipeline

    app.command("pipeline")(friendly_errors(pipeline))


_register_pipeline_command()


def _register_server_commands() -> None:
    from metaauto.cli_servers import register

    register(app)


_register_server_commands()


def _register_stack_commands() -> None:
    from metaauto.cli_stack import register

    register(app)


_register_stack_commands()


def main() -> None:  # pragma: no cover - console-script convenience
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
