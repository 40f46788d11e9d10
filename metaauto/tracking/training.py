"""A whole tracked meta-training run: train, evaluate with baselines, log, register, promote.

What one run records (names as they appear in the MLflow UI):

* parameters -- ``algorithm`` and ``algorithm.<hparam>``, ``backbone`` and ``backbone.<field>``, every
  :class:`~metaauto.engine.TrainConfig` field (``ways``, ``shots``, ``queries``, ``seed``, ``meta_lr`` ...),
  ``device`` (resolved), ``collection``, ``collection.fingerprint``, ``eval.*``, ``version.<library>``;
* metrics with steps -- ``meta_train/loss``, ``meta_train/<metric>``, ``meta_train/tasks_per_s``,
  ``meta_val/<metric>``, ``meta_val/ci95``; and, once, ``meta_test/<metric>`` with ``meta_test/ci95``,
  ``baseline/<name>/<metric>`` and ``/ci95`` for the scratch and pre-train baselines, the paired
  differences ``paired/<name>/difference``, and ``adaptation/<metric>`` stepped by inner steps (gradient
  learners) or shots (metric learners);
* the collection as a dataset input (name, fingerprint as digest, per-split summary as profile);
* artifacts -- ``learner/`` (meta-initialisation: ``model.safetensors`` + ``learner.json``),
  ``figures/learning_curve.png``, ``figures/adaptation_curve.png``, ``evaluation/report.json`` (per-task
  values included, which is what promotion pairs), and the pyfunc model ``model``;
* tags -- ``algorithm``, ``collection``, ``task_shape``, ``family``, a ``mlflow.note.content`` summary,
  and MLflow's user/source/git tags; the run name reads like ``protonet-omniglot-5w1s-seed0``.
"""

from __future__ import annotations

import platform
import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Any, Iterable

import mlflow.data
from mlflow.data.code_dataset_source import CodeDatasetSource
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking.context.registry import resolve_tags

from metaauto.engine.config import TrainConfig
from metaauto.engine.device import resolve_device
from metaauto.engine.training import TrainResult, meta_train
from metaauto.evaluation import PretrainBaseline, ScratchBaseline, adaptation_curve, compare, evaluate
from metaauto.evaluation.report import EvaluationReport, Estimate, MetaTestEpisodes, MetaTestSummary, MethodScore
from metaauto.learners import Learner
from metaauto.tracking.promotion import REPORT_ARTIFACT, PromotionDecision, promote, register
from metaauto.tracking import figures
from metaauto.tracking.callback import MlflowCallback
from metaauto.tracking.model import LoggedMetaModel, log_meta_model, save_meta_model
from metaauto.tracking.run import TrackedRun
from metaauto.tracking.store import DEFAULT_EXPERIMENT, get_client


@dataclass
class EvalSettings:
    """How the meta-test figures of a tracked run are measured (all on the same fixed episodes)."""

    split: str = "test"
    tasks: int = 600
    seed: int = 0
    batch_size: int = 25
    baselines: bool = True
    scratch_steps: int = 100
    pretrain_steps: int = 1000
    curve_tasks: int = 100
    curve_max_steps: int = 10
    curve_shots: tuple[int, ...] = (1, 2, 5)


@dataclass(frozen=True)
class TrainingSummary:
    """JSON-ready account of a tracked run (``metaauto train``'s and the flows' report): where it is, what
    it scored on the meta-test, and what the registry did with it."""

    tracking_uri: str
    run_id: str
    model_uri: str
    meta_test: MetaTestSummary
    #: ``(registered model name, version)`` when the run's model was registered
    registered: tuple[str, str] | None = None
    promotion: PromotionDecision | None = None

    def to_dict(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "model_uri": self.model_uri,
                                   "meta_test": self.meta_test.to_dict()}
        if self.registered is not None:
            summary["registered"] = {"name": self.registered[0], "version": self.registered[1]}
        if self.promotion is not None:
            summary["promotion"] = {**self.promotion.to_dict(), "description": self.promotion.describe()}
        return summary


@dataclass
class TrackedTraining:
    """What :func:`train_tracked` produced; ``model_uri`` loads with :func:`metaauto.load`."""

    run_id: str
    result: TrainResult
    report: EvaluationReport
    model: LoggedMetaModel
    version: ModelVersion | None = None
    decision: PromotionDecision | None = None

    @property
    def model_uri(self) -> str:
        if self.version is not None:
            return f"models:/{self.version.name}/{self.version.version}"
        return self.model.run_uri

    def summary(self) -> TrainingSummary:
        from metaauto.tracking.store import tracking_uri

        registered = (self.version.name, self.version.version) if self.version is not None else None
        return TrainingSummary(tracking_uri=tracking_uri(), run_id=self.run_id, model_uri=self.model_uri,
                               meta_test=self.report.summary(), registered=registered, promotion=self.decision)


def task_shape(collection: Any, config: TrainConfig) -> str:
    if collection.task_type == "classification":
        return f"{config.ways}-way {config.shots}-shot"
    return f"{config.shots}-shot regression"


def run_name(learner: Learner, collection: Any, config: TrainConfig) -> str:
    shape = f"{config.ways}w{config.shots}s" if collection.task_type == "classification" else f"{config.shots}shot"
    return f"{learner.name}-{collection.name}-{shape}-seed{config.seed}"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("metaauto", "torch", "numpy", "mlflow", "scikit-learn", "scipy"):
        try:
            versions[package] = package_version(package)
        except PackageNotFoundError:
            if package == "metaauto":
                import metaauto

                versions[package] = metaauto.__version__
    return versions


def run_params(learner: Learner, collection: Any, config: TrainConfig, evaluation: EvalSettings) -> dict[str, Any]:
    backbone = dict(getattr(learner.model, "spec", None) or {"name": type(learner.model).__name__})
    params: dict[str, Any] = {"algorithm": learner.name}
    params.update({f"algorithm.{k}": v for k, v in learner.hparams().items()})
    params["backbone"] = backbone.pop("name")
    params.update({f"backbone.{k}": v for k, v in backbone.items()})
    params.update(config.to_dict())
    params["device.requested"] = config.device
    params["device"] = str(resolve_device(config.device))
    params.update({
        "collection": collection.name,
        "collection.fingerprint": collection.fingerprint,
        "collection.task_type": collection.task_type,
    })
    params.update({f"eval.{k}": v for k, v in evaluation.__dict__.items()})
    params.update({f"version.{k}": v for k, v in library_versions().items()})
    return params


def collection_dataset(collection: Any) -> Any:
    """The collection as an MLflow dataset: its per-split summary, digest = the collection fingerprint."""
    rows = [
        {"split": split, "units": s.units, "unit_name": s.unit_name, "examples": s.examples}
        for split, s in collection.summary().items()
    ]
    path = getattr(collection, "source", None)
    if isinstance(path, (str, Path)) and Path(path).exists():
        source: Any = str(Path(path).resolve())  # a table file: MLflow records it as a local source
    else:
        # generated or archive-backed collections: the options that define them, as MLflow "code" source
        source = CodeDatasetSource(tags={"metaauto.collection": collection.name, "fingerprint": collection.fingerprint})
    with warnings.catch_warnings():  # counts are integers and never missing: MLflow's schema hint does not apply
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        return mlflow.data.from_pandas(pd.DataFrame(rows), source=source, name=collection.name, digest=collection.fingerprint)


def _episodes(collection: Any, config: TrainConfig, evaluation: EvalSettings) -> MetaTestEpisodes:
    return MetaTestEpisodes(
        collection=collection.name, fingerprint=collection.fingerprint, split=evaluation.split,
        ways=config.ways if collection.task_type == "classification" else None, shots=config.shots,
        queries=config.queries, tasks=evaluation.tasks, seed=evaluation.seed,
    )


def evaluate_run(
    run: TrackedRun, learner: Learner, collection: Any, config: TrainConfig, evaluation: EvalSettings
) -> EvaluationReport:
    """Meta-test the learner and the baselines on the same episodes; log the metrics and the curve, and
    return the report (the caller logs it, completed, as ``evaluation/report.json``)."""
    episodes = _episodes(collection, config, evaluation)
    ways, device = episodes.ways, config.device
    shared = dict(split=evaluation.split, ways=ways, shots=config.shots, queries=config.queries,
                  tasks=evaluation.tasks, seed=evaluation.seed, batch_size=evaluation.batch_size, device=device)
    backbone = getattr(learner.model, "spec", None)
    baselines = (
        [ScratchBaseline(backbone, steps=evaluation.scratch_steps, seed=config.seed),
         PretrainBaseline(backbone, pretrain_steps=evaluation.pretrain_steps, seed=config.seed)]
        if evaluation.baselines and backbone
        else []
    )
    comparison = compare(learner, collection, baselines=baselines, **shared)
    ours = comparison.results[learner.name]
    metric = ours.metric
    metrics = {f"meta_test/{metric}": ours.mean, "meta_test/ci95": ours.ci95}
    for name, result in comparison.results.items():
        if name != learner.name:
            metrics[f"baseline/{name}/{metric}"] = result.mean
            metrics[f"baseline/{name}/ci95"] = result.ci95
    for name, (diff, ci) in comparison.paired.items():
        metrics[f"paired/{name}/difference"] = diff
        metrics[f"paired/{name}/ci95"] = ci
    run.log_metrics(metrics)
    return EvaluationReport(
        episodes=episodes,
        metric=metric,
        learner=MethodScore(learner.name, ours.mean, ours.ci95, ours.per_task),
        baselines={name: MethodScore(name, r.mean, r.ci95, r.per_task, r.details)
                   for name, r in comparison.results.items() if name != learner.name},
        paired_difference={name: Estimate(d, c) for name, (d, c) in comparison.paired.items()},
        adaptation_curve=_log_adaptation_curve(run, learner, collection, config, evaluation, metric),
    )


def _log_adaptation_curve(run: TrackedRun, learner: Learner, collection: Any, config: TrainConfig,
                          evaluation: EvalSettings, metric: str) -> dict[str, Any]:
    """The metric by inner steps (gradient learners) or by shots (metric learners), logged as metrics and a figure."""
    ways = config.ways if collection.task_type == "classification" else None
    curve_tasks = min(evaluation.curve_tasks, evaluation.tasks)
    if learner.family == "gradient":
        curve = adaptation_curve(learner, collection, split=evaluation.split, ways=ways, shots=config.shots,
                                 queries=config.queries, tasks=curve_tasks, seed=evaluation.seed,
                                 max_steps=evaluation.curve_max_steps, batch_size=evaluation.batch_size, device=config.device)
        curve_data = {"x": "inner steps", **curve.to_dict()}
        xs = curve.steps
    else:
        xs = sorted(set(evaluation.curve_shots) | {config.shots})
        results = [evaluate(learner, collection, evaluation.split, ways, s, config.queries, curve_tasks, evaluation.seed,
                            evaluation.batch_size, device=config.device) for s in xs]
        curve_data = {"x": "shots", "steps": xs, "metric": metric, "mean": [r.mean for r in results], "ci95": [r.ci95 for r in results]}
    for x, value in zip(xs, curve_data["mean"]):
        run.log_metrics({f"adaptation/{metric}": value}, step=x)
    run.log_figure(
        figures.adaptation_curve(xs, curve_data["mean"], curve_data["ci95"], xlabel=curve_data["x"], metric=metric,
                                 title=f"{learner.name} on {collection.name} ({curve_tasks} tasks)"),
        "figures/adaptation_curve.png",
    )
    return curve_data


def _rescorer(collection: Any, client: MlflowClient, evaluation: EvalSettings) -> Any:
    """Score another registered version on given episodes of ``collection`` (for paired promotion)."""
    from metaauto.downstream.loading import load

    def rescore(version: ModelVersion, episodes: dict[str, Any]) -> list[float]:
        wanted = MetaTestEpisodes.from_dict(episodes)
        if wanted.fingerprint != collection.fingerprint:
            raise ValueError(f"the candidate's episodes come from collection {wanted.fingerprint}, not {collection.fingerprint}")
        model = load(f"models:/{version.name}/{version.version}", tracking_uri=client.tracking_uri)
        return evaluate(model.learner, collection, wanted.split, wanted.ways, wanted.shots, wanted.queries,
                        wanted.tasks, wanted.seed, evaluation.batch_size, device="cpu").per_task

    return rescore


def train_tracked(
    learner: Learner,
    collection: Any,
    config: TrainConfig,
    *,
    evaluation: EvalSettings | None = None,
    register_as: str | None = None,
    promote_champion: bool = True,
    margin: float = 0.0,
    alpha: float = 0.05,
    test: str = "wilcoxon",
    experiment: str = DEFAULT_EXPERIMENT,
    name: str | None = None,
    tags: dict[str, Any] | None = None,
    callbacks: Iterable[Any] = (),
    client: MlflowClient | None = None,
    output_dir: str | Path | None = None,
) -> TrackedTraining:
    """Meta-train ``learner`` on ``collection`` inside an MLflow run and log everything listed above.

    With ``register_as=NAME`` the run's model becomes a new version of NAME and, with
    ``promote_champion``, is promoted if it beats the champion (:func:`metaauto.tracking.promotion.promote`).
    ``output_dir`` also keeps the saved learner on disk. The run ends ``FINISHED``; any exception
    (from training, a callback, evaluation or the registry) ends it ``FAILED`` and propagates.
    """
    evaluation = evaluation or EvalSettings()
    client = client or get_client()
    run = TrackedRun.start(run_name=name or run_name(learner, collection, config),
                           tags={**_run_tags(learner, collection, config, evaluation), **(tags or {})},
                           experiment=experiment, client=client)
    with run:
        result = _train(run, learner, collection, config, evaluation, callbacks)
        report = evaluate_run(run, learner, collection, config, evaluation)
        report.training = {k: v for k, v in result.summary().items() if k != "history"}
        run.log_json(report.to_dict(), REPORT_ARTIFACT)
        run.log_json(result.history.to_dict(), "training/history.json")
        logged = _log_model(run, learner, collection, config, result, output_dir)
        version = decision = None
        if register_as:
            version = _register(run, logged, learner, collection, config, report, register_as, client)
            if promote_champion:
                decision = promote(register_as, version.version, client=client, margin=margin, alpha=alpha, test=test,
                                   rescore=_rescorer(collection, client, evaluation))
                run.set_tags({"promotion": "promoted" if decision.promoted else "rejected"})
    return TrackedTraining(run_id=run.run_id, result=result, report=report, model=logged, version=version, decision=decision)


def _run_tags(learner: Learner, collection: Any, config: TrainConfig, evaluation: EvalSettings) -> dict[str, Any]:
    shape = task_shape(collection, config)
    return {
        **resolve_tags(),
        "algorithm": learner.name,
        "family": learner.family,
        "collection": collection.name,
        "task_shape": shape,
        "mlflow.note.content": (
            f"{learner.name} meta-trained on {collection.name} ({shape}, {config.meta_steps} meta-updates, seed "
            f"{config.seed}); meta-test on {evaluation.tasks} fixed {evaluation.split} episodes with baselines."
        ),
    }


def _train(run: TrackedRun, learner: Learner, collection: Any, config: TrainConfig, evaluation: EvalSettings,
           callbacks: Iterable[Any]) -> TrainResult:
    """Meta-train with the run's parameters, dataset, streamed metrics and learning curve."""
    callback = MlflowCallback(run)
    try:
        run.log_params(run_params(learner, collection, config, evaluation))
        run.log_dataset(collection_dataset(collection), context="meta-train", tags={"fingerprint": collection.fingerprint})
        result = meta_train(learner, collection, config, callbacks=[callback, *callbacks])
    finally:
        callback.close()
    run.log_metrics({"train/wall_time_s": result.wall_time_s, "train/final_step": result.final_step}, step=result.final_step)
    run.set_tags({"stop_reason": result.stop_reason, "precision": result.precision})
    run.log_figure(figures.learning_curve(result.history, f"{learner.name} on {collection.name} ({task_shape(collection, config)})"),
                   "figures/learning_curve.png")
    return result


def _log_model(run: TrackedRun, learner: Learner, collection: Any, config: TrainConfig, result: TrainResult,
               output_dir: str | Path | None) -> LoggedMetaModel:
    """The learner's files under ``learner/`` and the pyfunc model (``output_dir`` keeps the files on disk too)."""
    episode = dict(ways=config.ways if collection.task_type == "classification" else None, shots=config.shots,
                   queries=config.queries)
    with tempfile.TemporaryDirectory() as tmp:
        saved = save_meta_model(learner, collection, Path(output_dir) if output_dir else Path(tmp) / "learner", **episode)
        run.log_artifacts(saved, "learner")
    return log_meta_model(run, learner, collection, step=result.final_step,
                          tags={"algorithm": learner.name, "collection": collection.name,
                                "task_shape": task_shape(collection, config)}, **episode)


def _register(run: TrackedRun, logged: LoggedMetaModel, learner: Learner, collection: Any, config: TrainConfig,
              report: EvaluationReport, name: str, client: MlflowClient) -> ModelVersion:
    shape = task_shape(collection, config)
    version = register(name, logged.model_id, client=client, tags={
        "algorithm": learner.name, "collection": collection.name, "task_shape": shape,
        "collection.fingerprint": collection.fingerprint,
        f"meta_test.{report.metric}": f"{report.learner.mean:.6g}",
    }, description=(
        f"{learner.name} on {collection.name} ({shape}): meta-test {report.metric} "
        f"{report.learner.mean:.4f} +- {report.learner.ci95:.4f} over {report.episodes.tasks} tasks."
    ))
    run.set_tags({"registered_model": f"{name}/{version.version}"})
    return version
