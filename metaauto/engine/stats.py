"""The summary statistic every few-shot figure uses, validation during training included.

Papers report the mean over ``n`` tasks with a 95% confidence interval of ``1.96 * std / sqrt(n)``
(normal approximation). ``std`` is the population standard deviation (``numpy.std`` defaults,
``ddof=0``), as in the reference implementations of MAML and Prototypical Networks, so that numbers
produced here are comparable to theirs. It lives in the engine, the lowest layer that reports a figure;
:mod:`metaauto.evaluation.metrics` builds on it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

Z_95 = 1.96


def mean_ci95(values: torch.Tensor | Sequence[float]) -> tuple[float, float]:
    """``(mean, half-width of the 95% confidence interval)`` of per-task values."""
    tensor = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = tensor.numel()
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = tensor.mean().item()
    std = tensor.std(correction=0).item()
    return mean, Z_95 * std / math.sqrt(n)
