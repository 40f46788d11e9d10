"""Scoring a learner on episodes without updating it (validation during training, meta-test)."""

from __future__ import annotations

import torch

from metaauto.engine.device import Precision
from metaauto.tasks.batch import TaskBatch


def score_episodes(
    learner: torch.nn.Module,
    batch: TaskBatch,
    *,
    device: torch.device,
    precision: Precision | None = None,
    batch_size: int | None = None,
    inner_steps: int | None = None,
) -> tuple[torch.Tensor, float]:
    """Per-task metric (``[tasks]`` float64 on the CPU) and mean query loss of ``learner`` on ``batch``.

    Tasks are forwarded ``batch_size`` at a time to bound memory. Metric learners run under
    ``no_grad``; gradient learners need autograd for their inner loop, so only their outputs are
    detached. The learner is put in eval mode and its previous mode restored afterwards.
    """
    precision = precision or Precision(enabled=False)
    size = batch_size or batch.tasks
    grad_mode = torch.enable_grad if getattr(learner, "family", "gradient") == "gradient" else torch.no_grad
    was_training = learner.training
    learner.eval()
    metrics: list[torch.Tensor] = []
    loss_sum = 0.0
    try:
        for start in range(0, batch.tasks, size):
            part = batch[start : start + size].to(device, non_blocking=True)
            with grad_mode(), precision.autocast(device):
                out = learner.forward_episodes(part, inner_steps=inner_steps)
            metrics.append(out.per_task_metric.detach().to("cpu", torch.float64))
            loss_sum += float(out.loss.detach()) * part.tasks
    finally:
        learner.train(was_training)
    return torch.cat(metrics), loss_sum / batch.tasks
