"""``metaauto train`` and ``metaauto evaluate``: meta-train one learner, score a saved one against baselines."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from metaauto.cli.common import (
    CHECKPOINT_SUBDIR,
    MODEL_SUBDIR,
    RUN_SUMMARY,
    Collection,
    CollectionOptions,
    DataDir,
    DataSource,
    Device,
    Json,
    emit,
    write_json,
)
from metaauto.config import home_dir
from metaauto.errors import LearnerError

@dataclass
class ModelChoice:
    """The learner and backbone to build: ``--algorithm``, ``--backbone``, ``--width`` and the inner loop."""

    algorithm: str
    backbone: Optional[str]
    width: Optional[int]
    inner_lr: Optional[float]
    inner_steps: Optional[int]
    first_order: Optional[bool]

    def build(self, coll: Any, ways: int, seed: int) -> Any:
        """The learner for ``coll`` (its head sized for ``ways``-way tasks), initialised from ``seed``."""
        import torch

        from metaauto.backbones import make_backbone
        from metaauto.learners import LEARNERS, available_learners, learner_defaults, make_learner

        usable = available_learners(coll.task_type)
        if self.algorithm not in usable:
            raise LearnerError(f"algorithm {self.algorithm!r} cannot solve {coll.task_type} tasks; for collection "
                               f"{coll.name!r} use one of {', '.join(usable)}")
        classification = coll.task_type == "classification"
        backbone = self.backbone or ("conv4" if len(coll.input_shape) == 3 else "mlp")
        metric_learner = LEARNERS[self.algorithm].family == "metric"
        out_features = None if metric_learner else coll.output_dim(ways if classification else None)
        explicit = {"inner_lr": self.inner_lr, "inner_steps": self.inner_steps, "first_order": self.first_order}
        hparams = {**learner_defaults(self.algorithm, coll.task_type), **{k: v for k, v in explicit.items() if v is not None}}
        torch.manual_seed(seed)
        return make_learner(self.algorithm, make_backbone(backbone, coll.input_shape, out_features, width=self.width), **hparams)


@dataclass
class Tracking:
    """``--track``, ``--register`` and the tracked meta-test evaluation's size."""

    track: bool
    register: Optional[str]
    eval_tasks: int
    baselines: bool
    pretrain_steps: int

    def check(self) -> None:
        if self.register and not self.track:
            raise LearnerError("--register needs tracking: drop --no-track")

    def settings(self, seed: int) -> Any:
        from metaauto.tracking import EvalSettings

        return EvalSettings(tasks=self.eval_tasks, seed=seed, baselines=self.baselines, pretrain_steps=self.pretrain_steps)


def _fit(learner: Any, coll: Any, config: Any, tracking: Tracking) -> tuple[Any, Optional[dict[str, Any]]]:
    """Meta-train (tracked or not); ``(TrainResult, MLflow account or None)``."""
    if not tracking.track:
        from metaauto.engine import meta_train

        return meta_train(learner, coll, config), None
    from metaauto.tracking import train_tracked

    tracked = train_tracked(learner, coll, config, evaluation=tracking.settings(config.seed), register_as=tracking.register)
    return tracked.result, tracked.summary().to_dict()


def _save(learner: Any, result: Any, run_dir: Path, source: dict[str, Any]) -> dict[str, Any]:
    """Save the learner and ``run.json``; the report ``train`` prints (the summary less its history)."""
    from metaauto.learners import save_learner

    model_dir = save_learner(learner.cpu(), run_dir / MODEL_SUBDIR, extra={**source, "train_digest": result.digest})
    summary = {"run_dir": str(run_dir), "model_dir": str(model_dir), **source, **result.summary()}
    write_json(run_dir / RUN_SUMMARY, summary)
    report = {k: v for k, v in summary.items() if k != "history"}
    report["validation"] = summary["history"]["val"]
    return report


def train(
    collection: Collection,
    algorithm: str = typer.Option(..., "--algorithm", "-a", help="Learner to meta-train."),
    data_dir: DataDir = None,
    collection_option: CollectionOptions = None,
    ways: int = typer.Option(5, help="Classes per episode (ignored for regression)."),
    shots: int = typer.Option(1, help="Support examples per class (per task for regression)."),
    queries: int = typer.Option(15, help="Query examples per class (per task for regression)."),
    meta_steps: int = typer.Option(1000, help="Meta-updates."),
    meta_batch_size: int = typer.Option(16, help="Tasks per meta-update."),
    meta_lr: float = typer.Option(1e-3, help="Outer learning rate."),
    optimizer: str = typer.Option("adam", help="Outer optimiser."),
    lr_schedule: str = typer.Option("none", help="Outer learning-rate schedule."),
    grad_clip: Optional[float] = typer.Option(None, help="Clip the meta-gradient norm."),
    backbone: Optional[str] = typer.Option(None, help="Backbone (default: conv4 for images, mlp otherwise)."),
    width: Optional[int] = typer.Option(None, help="conv4 channels / mlp hidden size."),
    inner_lr: Optional[float] = typer.Option(None, help="Inner-loop step size (gradient learners)."),
    inner_steps: Optional[int] = typer.Option(None, help="Inner-loop steps while training (gradient learners)."),
    first_order: Optional[bool] = typer.Option(None, "--first-order/--second-order", help="MAML meta-gradient order."),
    seed: int = typer.Option(0, help="Seeds initialisation, episodes and validation tasks."),
    val_every: int = typer.Option(100, help="Validate every N steps (0: never)."),
    val_tasks: int = typer.Option(100, help="Fixed validation episodes."),
    patience: Optional[int] = typer.Option(None, help="Stop after N validations without improvement."),
    checkpoint_every: int = typer.Option(100, help="Checkpoint every N steps."),
    device: Device = "auto",
    amp: str = typer.Option("auto", help="Mixed precision (auto: bf16/fp16 on CUDA only)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Run directory (default: $METAAUTO_HOME/runs/<algorithm>-<collection>-<ways>w<shots>s-seed<seed>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run checkpointed in the output directory."),
    track: bool = typer.Option(True, "--track/--no-track", help="Log the run, its meta-test evaluation and its model to MLflow."),
    register: Optional[str] = typer.Option(None, "--register", help="Register the model as a new version of NAME; promote it to @champion if it beats the current one."),
    eval_tasks: int = typer.Option(600, help="Meta-test episodes of the tracked evaluation."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Score the scratch and pre-train baselines in the tracked evaluation."),
    pretrain_steps: int = typer.Option(1000, help="Pre-training steps of the pre-train baseline."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    json_output: Json = False,
) -> None:
    """Meta-train a learner; saves the learner, a checkpoint and a run summary in the output directory.

    With tracking (the default) the run, its meta-test figures with baselines, its figures and its model
    go to MLflow (``MLFLOW_TRACKING_URI``, else SQLite under the project home).
    """
    from metaauto.engine import TrainConfig

    data, tracking = DataSource.from_cli(collection, data_dir, collection_option), Tracking(track, register, eval_tasks, baselines, pretrain_steps)
    tracking.check()
    coll = data.load()
    learner = ModelChoice(algorithm, backbone, width, inner_lr, inner_steps, first_order).build(coll, ways, seed)
    run_dir = output or home_dir() / "runs" / f"{algorithm}-{coll.name}-{ways}w{shots}s-seed{seed}"
    config = TrainConfig(
        ways=ways if coll.task_type == "classification" else None, shots=shots, queries=queries, meta_batch_size=meta_batch_size,
        meta_steps=meta_steps, meta_lr=meta_lr, optimizer=optimizer, lr_schedule=lr_schedule, grad_clip=grad_clip,
        val_every=val_every, val_tasks=val_tasks, patience=patience, seed=seed, device=device, amp=amp,
        checkpoint_dir=run_dir / CHECKPOINT_SUBDIR, checkpoint_every=checkpoint_every, resume=resume, progress=progress,
    )
    result, mlflow = _fit(learner, coll, config, tracking)
    source = {"collection": collection, "collection_name": coll.name, "collection_options": data.options,
              "collection_fingerprint": coll.fingerprint, "task_type": coll.task_type,
              "data_dir": str(data_dir.resolve()) if data_dir is not None else None,
              "ways": config.ways, "shots": shots, "queries": queries}
    report = _save(learner, result, run_dir, source)
    if mlflow is not None:
        report["mlflow"] = mlflow
    emit(report, json_output, _print_train)


def _print_train(report: dict[str, Any]) -> None:
    best = report["best_value"]
    best_text = f"best val {report['metric']} {best:.4f} at step {report['best_step']}" if best is not None else "no validation"
    typer.echo(
        f"trained {report['learner']} on {report['collection_name']} for {report['final_step']} steps "
        f"({report['stop_reason']}, {report['wall_time_s']:.1f}s on {report['device']}); {best_text}"
    )
    typer.echo(f"saved to {report['model_dir']}")
    if report.get("mlflow"):
        _print_tracking(report["mlflow"])


def _print_tracking(mlflow: dict[str, Any]) -> None:
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


def _evaluation_source(trained: dict[str, Any], collection: Optional[str], data_dir: Optional[Path],
                       collection_option: Optional[list[str]], learner_dir: Path) -> DataSource:
    """The collection to evaluate on: the options given, else the one recorded at training."""
    source = collection or trained.get("collection")
    if source is None:
        raise LearnerError(f"{learner_dir} does not record its collection; pass --collection")
    if data_dir is None and "METAAUTO_DATA_DIR" not in os.environ and collection is None and trained.get("data_dir"):
        data_dir = Path(trained["data_dir"])
    if collection_option or collection:
        return DataSource.from_cli(source, data_dir, collection_option)
    return DataSource(source, data_dir, dict(trained.get("collection_options", {})))


def evaluate(
    model: Path = typer.Option(..., "--model", "-m", help="Run directory written by `metaauto train` (or its model/ folder)."),
    collection: Optional[str] = typer.Option(None, "--collection", "-c", help="Override the collection recorded at training."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Dataset directory (default: $METAAUTO_DATA_DIR, then the one used for training)."),
    collection_option: CollectionOptions = None,
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
    device: Device = "auto",
    per_task: bool = typer.Option(False, "--per-task", help="Include per-task values in the JSON output."),
    json_output: Json = False,
) -> None:
    """Mean accuracy (MSE for regression) +- 95% CI over meta-test episodes, with baselines."""
    from metaauto.evaluation import PretrainBaseline, ScratchBaseline, compare
    from metaauto.learners import load_learner, read_learner_info

    learner_dir, run_dir = _locate_model(model)
    info = read_learner_info(learner_dir)
    trained = info.get("extra", {})
    coll = _evaluation_source(trained, collection, data_dir, collection_option, learner_dir).load()
    if trained.get("collection_fingerprint") not in (None, coll.fingerprint):
        typer.echo(f"warning: evaluating on collection {coll.name!r} with fingerprint {coll.fingerprint}; the learner was "
                   f"trained on fingerprint {trained['collection_fingerprint']}", err=True)
    spec = info["backbone"]
    methods = [ScratchBaseline(spec, steps=scratch_steps, seed=seed),
               PretrainBaseline(spec, pretrain_steps=pretrain_steps, seed=seed)] if baselines else []
    comparison = compare(
        load_learner(learner_dir), coll, methods, split=split, ways=ways if ways is not None else trained.get("ways", 5),
        shots=shots if shots is not None else trained.get("shots", 1),
        queries=queries if queries is not None else trained.get("queries", 15), tasks=tasks, seed=seed,
        batch_size=batch_size, inner_steps=inner_steps, device=device,
    )
    report = {"model_dir": str(learner_dir), "run_dir": str(run_dir) if run_dir else None, "learner": info["learner"],
              "collection": coll.name, "collection_fingerprint": coll.fingerprint, **comparison.to_dict(per_task=per_task)}
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
