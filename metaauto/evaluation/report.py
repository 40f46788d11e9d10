"""The meta-test report of a trained learner: what :func:`metaauto.tracking.train_tracked` measured.

A tracked run logs it as ``evaluation/report.json`` (:meth:`EvaluationReport.to_dict`); promotion reads it
back (:meth:`EvaluationReport.from_dict`) to pair the per-task values of two versions on the same
episodes, and the CLI, the flows and the dashboard show its :meth:`~EvaluationReport.summary`. The JSON
layout is the artifact's contract, so ``to_dict`` writes exactly the keys older runs hold and
``from_dict`` reads those runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class Estimate:
    """A mean with the half-width of its 95% confidence interval."""

    mean: float
    ci95: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci95": self.ci95}


@dataclass(frozen=True)
class MethodScore:
    """One method (the learner or a baseline) on the report's episodes, task by task."""

    name: str
    mean: float
    ci95: float
    per_task: list[float]
    details: dict[str, Any] | None = None

    @property
    def estimate(self) -> Estimate:
        return Estimate(self.mean, self.ci95)


@dataclass(frozen=True)
class MetaTestEpisodes:
    """Exactly which episodes were scored: two reports with equal episodes can be paired task by task."""

    collection: str
    fingerprint: str
    split: str
    ways: int | None
    shots: int
    queries: int
    tasks: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MetaTestEpisodes":
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class MetaTestSummary:
    """The report without its per-task values: the metric, the episode count and every method's estimate."""

    metric: str
    tasks: int
    #: the learner first, then the baselines
    scores: dict[str, Estimate]

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "tasks": self.tasks, **{name: e.to_dict() for name, e in self.scores.items()}}


@dataclass
class EvaluationReport:
    """The learner and its baselines on the same meta-test episodes (see the module docstring)."""

    episodes: MetaTestEpisodes
    metric: str
    learner: MethodScore
    baselines: dict[str, MethodScore]
    #: ``learner - baseline`` per baseline, paired task by task
    paired_difference: dict[str, Estimate]
    adaptation_curve: dict[str, Any] = field(default_factory=dict)
    #: the training run's summary (steps, wall time, stop reason ...), when the report comes from one
    training: dict[str, Any] | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"

    @property
    def methods(self) -> dict[str, MethodScore]:
        """The learner and the baselines, by name, the learner first."""
        return {self.learner.name: self.learner, **self.baselines}

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` is better than ``b`` under the report's metric."""
        return a > b if self.higher_is_better else a < b

    def winner(self) -> str:
        """The name of the method with the best mean (the first of equals)."""
        choose = max if self.higher_is_better else min
        return choose(self.methods, key=lambda name: self.methods[name].mean)

    def lead_over_baselines(self) -> float | None:
        """How far the learner's mean is from the nearest baseline's (``None`` without baselines)."""
        if not self.baselines:
            return None
        return min(abs(self.learner.mean - b.mean) for b in self.baselines.values())

    def beats_a_baseline(self) -> bool:
        return any(self.better(self.learner.mean, b.mean) for b in self.baselines.values())

    def summary(self) -> MetaTestSummary:
        return MetaTestSummary(self.metric, self.episodes.tasks, {n: m.estimate for n, m in self.methods.items()})

    def to_dict(self) -> dict[str, Any]:
        """The ``evaluation/report.json`` layout."""
        data: dict[str, Any] = {
            "episodes": self.episodes.to_dict(),
            "metric": self.metric,
            "learner": {"name": self.learner.name, "mean": self.learner.mean, "ci95": self.learner.ci95,
                        "per_task": self.learner.per_task},
            "baselines": {name: {"mean": b.mean, "ci95": b.ci95, "per_task": b.per_task, "details": b.details}
                          for name, b in self.baselines.items()},
            "paired_difference": {name: d.to_dict() for name, d in self.paired_difference.items()},
            "adaptation_curve": self.adaptation_curve,
        }
        if self.training is not None:
            data["training"] = self.training
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvaluationReport":
        learner = data["learner"]
        return cls(
            episodes=MetaTestEpisodes.from_dict(data["episodes"]),
            metric=data["metric"],
            learner=MethodScore(learner["name"], learner["mean"], learner["ci95"], list(learner["per_task"])),
            baselines={name: MethodScore(name, b["mean"], b["ci95"], list(b.get("per_task", [])), b.get("details"))
                       for name, b in data.get("baselines", {}).items()},
            paired_difference={name: Estimate(d["mean"], d["ci95"]) for name, d in data.get("paired_difference", {}).items()},
            adaptation_curve=dict(data.get("adaptation_curve", {})),
            training=data.get("training"),
        )
