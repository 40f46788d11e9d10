"""One meta-batch of episodes, as stacked tensors.

Episodes are stored ``[tasks, examples, ...]`` so that a learner can vectorise over the leading
dimension (``torch.func.vmap``) instead of looping over tasks in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

TaskType = Literal["classification", "regression"]


@dataclass(frozen=True)
class TaskBatch:
    """``tasks`` episodes with ``S`` support and ``Q`` query examples each.

    Classification: ``support_y``/``query_y`` are ``int64`` of shape ``[tasks, S]``/``[tasks, Q]``
    holding episode-local labels ``0..ways-1`` (ordered by class: ``shots`` examples of class 0, then of
    class 1, ...). Regression: targets are ``float32`` of shape ``[tasks, S, out_dim]``.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    task_type: TaskType
    ways: int | None = None
    shots: int | None = None

    def __post_init__(self) -> None:
        tasks = self.support_x.shape[0]
        for name in ("support_y", "query_x", "query_y"):
            if getattr(self, name).shape[0] != tasks:
                raise ValueError(f"TaskBatch.{name} has {getattr(self, name).shape[0]} tasks, support_x has {tasks}")
        if self.support_x.shape[1] != self.support_y.shape[1] or self.query_x.shape[1] != self.query_y.shape[1]:
            raise ValueError("TaskBatch inputs and targets disagree on the number of examples per task")

    @property
    def tasks(self) -> int:
        return self.support_x.shape[0]

    def __len__(self) -> int:
        return self.tasks

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "TaskBatch":
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return replace(
            self,
            support_x=move(self.support_x),
            support_y=move(self.support_y),
            query_x=move(self.query_x),
            query_y=move(self.query_y),
        )

    def __getitem__(self, index: int | slice) -> "TaskBatch":
        """A sub-batch; an integer index keeps the task dimension (``batch[i]`` has one task)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return replace(
            self,
            support_x=self.support_x[index],
            support_y=self.support_y[index],
            query_x=self.query_x[index],
            query_y=self.query_y[index],
        )
