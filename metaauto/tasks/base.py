"""The task-collection contract every source (images, tables, synthetic families) implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metaauto.errors import CollectionError
from metaauto.tasks.batch import TaskBatch, TaskType

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PooledData:
    """All examples of one split as a flat supervised dataset (for the pre-train baseline).

    ``y`` holds global class indices ``0..n_classes-1`` for classification, targets for regression.
    """

    x: torch.Tensor
    y: torch.Tensor
    n_classes: int | None = None


@dataclass
class SplitSummary:
    """What a split holds, in the units of the collection (classes, users, sites, tasks)."""

    units: int
    examples: int
    unit_name: str = "classes"
    extra: dict[str, Any] = field(default_factory=dict)


class TaskCollection(abc.ABC):
    """A named, fingerprinted family of tasks with disjoint meta-train/val/test splits.

    Subclasses load and validate their source in ``__init__`` (so a bad file fails at load time, not in
    the middle of training) and implement :meth:`sample`. Sampling is a pure function of its arguments:
    the same ``seed`` always yields the same episodes, which makes training exactly resumable.
    """

    name: str
    task_type: TaskType
    #: shape of one example's input, e.g. ``(1, 28, 28)`` or ``(n_features,)``
    input_shape: tuple[int, ...]
    #: regression output width (1 for scalar targets); ``None`` for classification
    target_dim: int | None = None

    @property
    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A short hex digest of the source data and the options that shape the tasks."""

    @abc.abstractmethod
    def sample(
        self,
        split: str = "train",
        ways: int | None = 5,
        shots: int = 1,
        queries: int = 15,
        tasks: int = 32,
        seed: int = 0,
    ) -> TaskBatch:
        """Sample ``tasks`` episodes from ``split``.

        Classification: ``ways`` classes, ``shots`` support and ``queries`` query examples per class.
        Regression: ``shots`` support and ``queries`` query points per task (``ways`` is ignored).
        """

    @abc.abstractmethod
    def summary(self) -> dict[str, SplitSummary]:
        """Per-split counts, for validation reports and meta-features."""

    def pooled(self, split: str = "train", max_examples: int | None = None, seed: int = 0) -> PooledData:
        """The split as one supervised dataset; collections that have no natural pooling raise."""
        raise NotImplementedError(f"collection {self.name!r} has no pooled view")

    def output_dim(self, ways: int | None) -> int:
        """Width of the model output an episode needs: ``ways`` logits, or the target width."""
        if self.task_type == "classification":
            if ways is None:
                raise ValueError(f"collection {self.name!r} is a classification collection: give ways")
            return int(ways)
        return int(self.target_dim or 1)

    @staticmethod
    def _check_split(name: str, split: str) -> None:
        if split not in SPLITS:
            raise CollectionError(f"collection {name!r}: unknown split {split!r}; expected one of {SPLITS}")

    @staticmethod
    def _rng(seed: int, split: str) -> np.random.Generator:
        """A generator keyed by (seed, split), so that splits never draw the same stream."""
        return np.random.default_rng([int(seed) & 0xFFFFFFFF, SPLITS.index(split)])
