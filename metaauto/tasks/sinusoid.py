"""The sinusoid regression family of the MAML paper (Finn et al., 2017).

A task is ``y = amplitude * sin(x - phase)`` with amplitude and phase drawn uniformly per task and ``x``
uniform per point. The family is infinite, so splits cannot be sets of stored tasks; instead each split
draws from its own random stream (the generator is keyed by ``(seed, split)``), which makes the splits
disjoint streams of tasks: no meta-val or meta-test episode reuses a meta-train draw, and the same
``seed`` gives the same episodes in every process.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch

from metaauto.errors import CollectionError
from metaauto.tasks.base import SPLITS, PooledData, SplitSummary, TaskCollection
from metaauto.tasks.batch import TaskBatch
from metaauto.tasks.validation import check_episode

#: points per task in the pooled view, enough to see the whole x range of every task
POOLED_POINTS_PER_TASK = 10
POOLED_DEFAULT_EXAMPLES = 10_000


def _check_range(arg: str, value: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise CollectionError(f"sinusoid: {arg} must be a (low, high) pair of numbers, got {value!r}") from exc
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise CollectionError(f"sinusoid: {arg} must be finite with low <= high, got {value!r}")
    return low, high


class SinusoidCollection(TaskCollection):
    """Sine-wave regression tasks; inputs and targets ``float32 [tasks, points, 1]``."""

    name = "sinusoid"
    task_type = "regression"
    input_shape = (1,)
    target_dim = 1

    def __init__(
        self,
        *,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        self.amplitude = _check_range("amplitude", amplitude)
        self.phase = _check_range("phase", phase)
        self.x_range = _check_range("x_range", x_range)
        options = {"collection": self.name, "amplitude": self.amplitude, "phase": self.phase, "x_range": self.x_range}
        self._fingerprint = hashlib.blake2b(json.dumps(options, sort_keys=True).encode(), digest_size=8).hexdigest()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _draw(self, rng: np.random.Generator, tasks: int, points: int) -> tuple[np.ndarray, np.ndarray]:
        amplitude = rng.uniform(*self.amplitude, size=(tasks, 1, 1))
        phase = rng.uniform(*self.phase, size=(tasks, 1, 1))
        x = rng.uniform(*self.x_range, size=(tasks, points, 1))
        return x.astype(np.float32), (amplitude * np.sin(x - phase)).astype(np.float32)

    def sample(
        self,
        split: str = "train",
        ways: int | None = None,
        shots: int = 10,
        queries: int = 10,
        tasks: int = 32,
        seed: int = 0,
    ) -> TaskBatch:
        """``shots`` support and ``queries`` query points of ``tasks`` sine waves (``ways`` is ignored)."""
        self._check_split(self.name, split)
        check_episode(self.name, ways, shots, queries, tasks, classification=False)
        x, y = self._draw(self._rng(seed, split), tasks, shots + queries)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        return TaskBatch(
            support_x=x[:, :shots],
            support_y=y[:, :shots],
            query_x=x[:, shots:],
            query_y=y[:, shots:],
            task_type="regression",
            shots=shots,
        )

    def pooled(self, split: str = "train", max_examples: int | None = None, seed: int = 0) -> PooledData:
        """``max_examples`` points (default 10,000) from ``max_examples / 10`` tasks of ``split``, flattened."""
        self._check_split(self.name, split)
        examples = POOLED_DEFAULT_EXAMPLES if max_examples is None else int(max_examples)
        if examples < 1:
            raise CollectionError(f"sinusoid: max_examples must be >= 1, got {max_examples!r}")
        tasks = math.ceil(examples / POOLED_POINTS_PER_TASK)
        x, y = self._draw(self._rng(seed, split), tasks, POOLED_POINTS_PER_TASK)
        return PooledData(x=torch.from_numpy(x.reshape(-1, 1)[:examples]), y=torch.from_numpy(y.reshape(-1, 1)[:examples]))

    def summary(self) -> dict[str, SplitSummary]:
        """Every split is an unbounded stream: ``units``/``examples`` are 0 and ``extra`` says so."""
        return {
            split: SplitSummary(
                units=0,
                examples=0,
                unit_name="tasks",
                extra={"unbounded": True, "amplitude": self.amplitude, "phase": self.phase, "x_range": self.x_range},
            )
            for split in SPLITS
        }
