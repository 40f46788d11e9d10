"""What a run records: one row per meta-update, one per validation.

Rows are plain numbers so that a history survives a checkpoint (``torch.load(weights_only=True)``),
a JSON run summary and an MLflow log without conversion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepRecord:
    """One meta-update: ``loss`` is the mean query loss of its meta-batch, ``metric`` the mean accuracy
    (classification) or MSE (regression) over its tasks, ``tasks_per_s`` the wall-clock throughput
    of the whole step (sampling included)."""

    step: int
    loss: float
    metric: float
    tasks_per_s: float
    lr: float


@dataclass(frozen=True)
class ValidationRecord:
    """The learner scored on the fixed validation episodes after ``step`` meta-updates."""

    step: int
    metric: float
    ci95: float
    loss: float
    is_best: bool


@dataclass
class History:
    #: ``"accuracy"`` (higher is better) or ``"mse"`` (lower is better)
    metric: str
    train: list[StepRecord] = field(default_factory=list)
    val: list[ValidationRecord] = field(default_factory=list)

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "train": [asdict(r) for r in self.train],
            "val": [asdict(r) for r in self.val],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        return cls(
            metric=data["metric"],
            train=[StepRecord(**r) for r in data["train"]],
            val=[ValidationRecord(**r) for r in data["val"]],
        )

    def without_timings(self) -> dict[str, Any]:
        """The history minus wall-clock figures: what two runs with the same seed must agree on."""
        data = self.to_dict()
        for row in data["train"]:
            row.pop("tasks_per_s")
        return data
