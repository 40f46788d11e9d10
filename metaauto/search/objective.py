"""What one trial does: build the drawn learner, meta-train it under a budget, report, and say how it ended.

The trial's value is the best meta-validation accuracy (or minus the best meta-validation MSE, so that
every study maximises). Each validation is reported to Optuna at its meta-step, which is the resource
the pruners (Hyperband, median, successive halving) compare trials on; a pruned trial stops right there.
The budget is multi-fidelity: at most ``max_steps`` meta-updates and, optionally, ``seconds`` of
training, after which the trial stops gracefully (one last validation) and counts as complete.

A trial never takes the study down: divergence (a non-finite loss or validation metric) and running out
of memory end it PRUNED -- the configuration is bad, not the code -- and any other exception ends it
FAILED; both with the reason in the trial's ``metaauto.reason`` user attribute and on its MLflow run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import optuna
import torch
from optuna.trial import TrialState

from metaauto.backbones import make_backbone
from metaauto.engine import RunState, TimeBudget, TrainConfig, meta_train
from metaauto.engine.history import ValidationRecord
from metaauto.errors import DivergenceError
from metaauto.learners import LEARNERS, make_learner
from metaauto.search.space import Candidate, SearchError, SearchSpace

REASON = "metaauto.reason"
RUN_ID = "mlflow.run_id"
_OOM = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), MemoryError) if t is not None)


@dataclass
class Budget:
    """Per-trial fidelity: meta-updates, wall-clock seconds of training, and how often to report."""

    max_steps: int = 1000
    seconds: float | None = None
    val_every: int = 100
    val_tasks: int = 100

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.val_every < 1 or self.val_tasks < 1:
            raise SearchError(f"a trial budget needs max_steps, val_every and val_tasks >= 1 (trials are scored on "
                              f"validation), got {self.max_steps}, {self.val_every}, {self.val_tasks}")
        if self.seconds is not None and self.seconds <= 0:
            raise SearchError(f"the per-trial time budget must be positive, got {self.seconds} s")


@dataclass
class EpisodeSettings:
    """What every trial shares: the episodes, the network family, the seed and the device."""

    ways: int | None
    shots: int
    queries: int
    backbone: str
    seed: int = 0
    device: str = "auto"

    @classmethod
    def for_collection(cls, collection: Any, ways: int | None, shots: int, queries: int, *, backbone: str | None = None,
                       seed: int = 0, device: str = "auto") -> "EpisodeSettings":
        """``ways`` only for classification; the backbone defaults to conv4 for images, an MLP otherwise."""
        classification = collection.task_type == "classification"
        backbone = backbone or ("conv4" if len(collection.input_shape) == 3 else "mlp")
        return cls(ways=ways if classification else None, shots=shots, queries=queries, backbone=backbone, seed=seed,
                   device=device)


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended: COMPLETE with its value, PRUNED (by the pruner, or diverged, or out of memory) or
    FAIL, with the reason (also the trial's ``metaauto.reason`` attribute)."""

    number: int
    state: TrialState
    value: float | None = None
    reason: str | None = None

    @classmethod
    def failed(cls, number: int, error: BaseException) -> "TrialOutcome":
        return cls(number, TrialState.FAIL, None, f"{type(error).__name__}: {error}")

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "state": self.state.name, "value": self.value, "reason": self.reason}


def score(metric: str, value: float) -> float:
    """The maximised objective: accuracy as is, MSE negated."""
    return value if metric == "accuracy" else -value


def build(candidate: Candidate, collection: Any, episodes: EpisodeSettings) -> Any:
    """The learner of ``candidate`` around a fresh backbone, initialised from ``episodes.seed``."""
    classification = collection.task_type == "classification"
    metric_learner = LEARNERS[candidate.algorithm].family == "metric"
    out_features = None if metric_learner else collection.output_dim(episodes.ways if classification else None)
    torch.manual_seed(episodes.seed)
    model = make_backbone(episodes.backbone, collection.input_shape, out_features, width=candidate.width)
    return make_learner(candidate.algorithm, model, **candidate.hparams)


def train_config(candidate: Candidate, collection: Any, episodes: EpisodeSettings, budget: Budget, progress: bool = False) -> TrainConfig:
    return TrainConfig(
        ways=episodes.ways if collection.task_type == "classification" else None, shots=episodes.shots,
        queries=episodes.queries, meta_batch_size=candidate.meta_batch_size, meta_steps=budget.max_steps,
        meta_lr=candidate.meta_lr, val_every=budget.val_every, val_tasks=budget.val_tasks, seed=episodes.seed,
        device=episodes.device, progress=progress,
    )


class TrialCallback(TimeBudget):
    """Reports validations to the trial, prunes on the pruner's word, and enforces the time budget."""

    def __init__(self, trial: optuna.Trial, seconds: float | None) -> None:
        super().__init__(seconds)
        self.trial = trial

    def on_validation(self, run: RunState, record: ValidationRecord) -> None:
        metric = run.history.metric
        if not math.isfinite(record.metric):
            raise DivergenceError(f"meta-val {metric} became {record.metric} at step {record.step}")
        value = score(metric, record.metric)
        self.trial.report(value, record.step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {record.step}: meta-val {metric} {record.metric:.4g}")


def _is_divergence(exc: BaseException) -> bool:
    # the engine refuses to step on a non-finite meta-loss, and a trial on a non-finite validation, with a DivergenceError
    return isinstance(exc, DivergenceError)


class Objective:
    """The callable handed to :meth:`optuna.Study.optimize`.

    ``tracker`` (optional) opens one nested MLflow run per trial (:class:`~metaauto.search.tracking.TrialTracker`);
    ``callbacks`` are extra :func:`~metaauto.engine.meta_train` callbacks run in every trial.
    """

    def __init__(
        self,
        space: SearchSpace,
        collection: Any,
        episodes: EpisodeSettings,
        budget: Budget,
        tracker: Any = None,
        callbacks: Iterable[Any] = (),
    ) -> None:
        self.space = space
        self.collection = collection
        self.episodes = episodes
        self.budget = budget
        self.tracker = tracker
        self.callbacks = list(callbacks)

    def __call__(self, trial: optuna.Trial) -> float:
        candidate = self.space.suggest(trial)
        run = self.tracker.start(trial, candidate) if self.tracker is not None else None
        if run is not None:
            trial.set_user_attr(RUN_ID, run.run_id)
        try:
            learner = build(candidate, self.collection, self.episodes)
            config = train_config(candidate, self.collection, self.episodes, self.budget)
            # tracking first, so that the validation which gets a trial pruned is still logged
            extra = [self.tracker.callback(run)] if run is not None else []
            if run is not None:
                self.tracker.log_setup(run, learner, self.collection, config)
            result = meta_train(learner, self.collection, config,
                                callbacks=[*extra, TrialCallback(trial, self.budget.seconds), *self.callbacks])
            if result.best_value is None or not math.isfinite(result.best_value):
                raise DivergenceError(f"no finite meta-validation {result.history.metric} after {result.final_step} steps")
            value = score(result.history.metric, result.best_value)
        except optuna.TrialPruned as exc:
            self._end(trial, run, "PRUNED", str(exc))
            raise
        except Exception as exc:
            if _is_divergence(exc) or isinstance(exc, _OOM):
                reason = f"{'diverged' if _is_divergence(exc) else 'out of memory'}: {exc}"
                self._end(trial, run, "PRUNED", reason)
                raise optuna.TrialPruned(reason) from exc
            self._end(trial, run, "FAIL", f"{type(exc).__name__}: {exc}", exc)
            raise
        trial.set_user_attr("final_step", result.final_step)
        trial.set_user_attr("stop_reason", result.stop_reason)
        self._end(trial, run, "COMPLETE", result.stop_reason, value=value, result=result)
        return value

    def run(self, trial: optuna.Trial) -> TrialOutcome:
        """Run ``trial`` and say how it ended, for ask-and-tell drivers; a trial that FAILED (its reason
        recorded) raises, so that the driver can show the error before it tells the study."""
        try:
            value = self(trial)
        except optuna.TrialPruned as exc:
            return TrialOutcome(trial.number, TrialState.PRUNED, None, str(exc))
        return TrialOutcome(trial.number, TrialState.COMPLETE, value, trial.user_attrs.get("stop_reason"))

    def _end(self, trial: optuna.Trial, run: Any, state: str, reason: str, error: BaseException | None = None,
             value: float | None = None, result: Any = None) -> None:
        trial.set_user_attr(REASON, reason)
        if run is not None:
            self.tracker.finish(run, trial, state, reason, error=error, value=value, result=result)
