"""Summary statistics reported for few-shot results.

Papers report the mean over ``n`` meta-test tasks with a 95% confidence interval of
``1.96 * std / sqrt(n)`` (normal approximation). ``std`` is the population standard deviation
(``numpy.std`` defaults, ``ddof=0``), as in the reference implementations of MAML and Prototypical
Networks, so that numbers produced here are comparable to theirs. :func:`mean_ci95` itself lives in
:mod:`metaauto.engine.stats` (training validates with it; the engine imports nothing from evaluation).
"""

from __future__ import annotations

from typing import Sequence

import torch

from metaauto.engine.stats import Z_95, mean_ci95

__all__ = ["Z_95", "mean_ci95", "paired_difference"]


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
