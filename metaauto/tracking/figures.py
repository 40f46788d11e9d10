"""The PNG figures attached to a run: the learning curve and the adaptation curve."""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # runs happen in servers, workers and CI: never open a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def learning_curve(history: Any, title: str) -> Figure:
    """Meta-train loss per step (left) and meta-val metric with its 95% CI per validation (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = [r.step for r in history.train]
    left.plot(steps, [r.loss for r in history.train], lw=1, color="tab:blue")
    left.set(xlabel="meta-update", ylabel="meta-train loss", title="meta-train loss")
    if history.val:
        vs = [r.step for r in history.val]
        vm = [r.metric for r in history.val]
        ci = [r.ci95 for r in history.val]
        right.plot(vs, vm, marker="o", color="tab:orange")
        right.fill_between(vs, [m - c for m, c in zip(vm, ci)], [m + c for m, c in zip(vm, ci)], alpha=0.25, color="tab:orange")
    else:
        right.text(0.5, 0.5, "no validation", ha="center", va="center", transform=right.transAxes)
    right.set(xlabel="meta-update", ylabel=f"meta-val {history.metric}", title=f"meta-val {history.metric} (95% CI)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def adaptation_curve(x: Sequence[int], mean: Sequence[float], ci95: Sequence[float], *, xlabel: str, metric: str, title: str) -> Figure:
    """Meta-test metric against the amount of adaptation (inner steps, or support examples per class)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.errorbar(list(x), list(mean), yerr=list(ci95), marker="o", capsize=3)
    ax.set(xlabel=xlabel, ylabel=f"meta-test {metric}", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
