"""Losses, metrics and checks shared by all learners, written per task so they run under ``vmap``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaauto.errors import LearnerError
from metaauto.tasks.batch import TaskBatch


def check_task_type(learner_name: str, task_types: tuple[str, ...], batch: TaskBatch) -> None:
    if batch.task_type not in task_types:
        raise LearnerError(
            f"learner {learner_name!r} solves {' and '.join(task_types)} tasks, "
            f"but the batch holds {batch.task_type} tasks"
        )


def episode_ways(batch: TaskBatch) -> int:
    """Number of classes per episode; labels are episode-local ``0..ways-1``."""
    if batch.ways is not None:
        return int(batch.ways)
    return int(batch.support_y.max().item()) + 1


def task_loss(output: torch.Tensor, target: torch.Tensor, task_type: str, ways: int | None) -> torch.Tensor:
    """Mean loss of one task's examples (cross-entropy or MSE), after checking the output shape.

    ``ways=None`` (a lone task handed to ``adapt``) skips the width check: the labels alone may not
    show every class.

    The shape check runs on the per-task shapes, so it also works inside ``vmap``, and it turns what
    would be an obscure indexing error deep in ``cross_entropy`` into a message naming both numbers.
    """
    if task_type == "classification":
        if output.dim() != 2 or (ways is not None and output.shape[-1] != ways):
            raise LearnerError(
                f"the model outputs {output.shape[-1] if output.dim() else 1} values per example "
                f"but the episodes have {ways} ways; build the model with out_features={ways}"
            )
        return F.cross_entropy(output, target)
    if output.shape != target.shape:
        raise LearnerError(
            f"the model outputs shape {tuple(output.shape)} per task but the regression targets have "
            f"shape {tuple(target.shape)}; build the model with out_features={target.shape[-1]}"
        )
    return F.mse_loss(output, target)


def per_task_metric(output: torch.Tensor, target: torch.Tensor, task_type: str) -> torch.Tensor:
    """Accuracy per task for classification, MSE per task for regression (``[tasks]``)."""
    output = output.detach().float()  # float32 even under autocast, so accuracies are not rounded to bf16
    if task_type == "classification":
        return (output.argmax(dim=-1) == target).float().mean(dim=-1)
    return (output - target.float()).pow(2).flatten(1).mean(dim=1)
