"""Summary statistics reported for few-shot results.

Papers report the mean over ``n`` meta-test tasks with a 95% confidence interval of
``1.96 * std / sqrt(n)`` (normal approximation). ``std`` is the population standard deviation
(``numpy.std`` defaults, ``ddof=0``), as in the reference implementations of MAML and Prototypical
Networks, so that numbers produced here are comparable to theirs.
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


def paired_difference(a: torch.Tensor | Sequence[float], b: torch.Tensor | Sequence[float]) -> tuple[float, float]:
    """Mean and 95% CI of ``a - b`` over the same tasks.

    Scoring two methods on the same episodes removes the between-task variance from their comparison,
    so this interval is usually much narrower than the two marginal ones suggest.
    """
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape:
        raise ValueError(f"paired values must come from the same tasks; got {a.numel()} and {b.numel()} values")
    return mean_ci95(a - b)
