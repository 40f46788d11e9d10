"""Accuracy (or MSE) as a function of the number of inner adaptation steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from metaauto.engine.device import resolve_device
from metaauto.errors import LearnerError
from metaauto.evaluation.protocol import EvaluationResult, learner_scorer, run_protocol


@dataclass
class AdaptationCurve:
    """``results[i]`` is the evaluation after ``steps[i]`` inner steps, all on the same episodes."""

    steps: list[int]
    results: list[EvaluationResult]

    @property
    def mean(self) -> list[float]:
        return [r.mean for r in self.results]

    @property
    def ci95(self) -> list[float]:
        return [r.ci95 for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "metric": self.results[0].metric,
            "mean": self.mean,
            "ci95": self.ci95,
        }


def adaptation_curve(
    learner: torch.nn.Module,
    collection: Any,
    split: str = "test",
    ways: int | None = 5,
    shots: int = 1,
    queries: int = 15,
    tasks: int = 600,
    seed: int = 0,
    max_steps: int = 10,
    batch_size: int = 25,
    device: str | torch.device = "auto",
) -> AdaptationCurve:
    """Evaluate a gradient learner after ``0, 1, ..., max_steps`` inner steps on the same episodes.

    Step 0 is the meta-learned initialisation itself (for classification, near chance unless the
    labels carry meaning across tasks), so the curve shows how much each step of adaptation buys.
    """
    if getattr(learner, "family", None) != "gradient":
        raise LearnerError(
            f"adaptation curves need a gradient-based learner; {getattr(learner, 'name', learner)!r} "
            "adapts without inner steps"
        )
    if max_steps < 0:
        raise LearnerError(f"max_steps must be >= 0, got {max_steps}")
    device = resolve_device(device)
    learner.to(device)
    steps = list(range(max_steps + 1))
    scorers = {f"{learner.name}@{k}": learner_scorer(learner, device, batch_size, inner_steps=k) for k in steps}
    results = run_protocol(
        scorers, collection, split=split, ways=ways, shots=shots, queries=queries, tasks=tasks, seed=seed
    )
    return AdaptationCurve(steps=steps, results=[results[f"{learner.name}@{k}"] for k in steps])
