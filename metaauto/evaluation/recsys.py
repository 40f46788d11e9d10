"""Cold-start recommendation evaluation: per-user MAE, RMSE and nDCG@10, and the classic baselines.

Every method is a *predictor*: a function from one :class:`~metaauto.tasks.movielens.UserEpisode` (K
support ratings, all other ratings as the query) to predicted query ratings. :func:`evaluate_recsys`
scores all predictors on the same users and the same support draws, and reports the mean over users
with a 95% confidence interval (:func:`~metaauto.evaluation.metrics.mean_ci95`), so methods are compared
user for user.

nDCG@10 ranks a user's query items by the prediction (ties broken by one fixed random order per user, so
a constant predictor scores the nDCG of a random ranking rather than of the file order) and uses the
true rating as the gain.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from metaauto.evaluation.metrics import mean_ci95
from metaauto.tasks.factorization import MatrixFactorization  # noqa: F401 (the MF fold-in baseline: .predictor())

Predictor = Callable[[object], np.ndarray]
METRICS = ("mae", "rmse", "ndcg@10")


def ndcg_at_k(pred: np.ndarray, true: np.ndarray, k: int = 10, tiebreak: np.ndarray | None = None) -> float:
    """nDCG@k of ranking by ``pred`` with gains ``true``; ``tiebreak`` orders equal predictions."""
    pred, true = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(true, dtype=np.float64).ravel()
    tiebreak = np.arange(len(pred)) if tiebreak is None else tiebreak
    order = np.lexsort((tiebreak, -pred))[:k]
    discounts = 1.0 / np.log2(np.arange(2, min(k, len(pred)) + 2))
    dcg = float((true[order] * discounts[: len(order)]).sum())
    ideal = float((np.sort(true)[::-1][:k] * discounts[: min(k, len(true))]).sum())
    return dcg / ideal if ideal > 0 else 0.0


def user_metrics(pred: np.ndarray, true: np.ndarray, tiebreak: np.ndarray | None = None) -> dict[str, float]:
    pred, true = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(true, dtype=np.float64).ravel()
    err = pred - true
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "ndcg@10": ndcg_at_k(pred, true, 10, tiebreak),
    }


@dataclass
class RecsysResult:
    """Per-method per-user metric values, and their means with 95% CIs."""

    shots: int
    users: int
    per_user: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        return {m: {k: mean_ci95(v) for k, v in metrics.items()} for m, metrics in self.per_user.items()}


def evaluate_recsys(episodes: Sequence, predictors: dict[str, Predictor], seed: int = 0) -> RecsysResult:
    """Score every predictor on every episode (same users, same support draws)."""
    rng = np.random.default_rng(seed)
    result = RecsysResult(shots=int(len(episodes[0].support_y)) if episodes else 0, users=len(episodes))
    for name in predictors:
        result.per_user[name] = {k: [] for k in METRICS}
    for episode in episodes:
        true = episode.query_y.numpy().ravel()
        tiebreak = rng.permutation(len(true))
        for name, predict in predictors.items():
            pred = np.clip(np.asarray(predict(episode), dtype=np.float64).ravel(), 0.5, 5.0)
            for key, value in user_metrics(pred, true, tiebreak).items():
                result.per_user[name][key].append(value)
    return result


# -- simple baselines --------------------------------------------------------------------------------


def global_mean_predictor(global_mean: float) -> Predictor:
    return lambda ep: np.full(len(ep.query_y), global_mean)


def item_mean_predictor(item_means: np.ndarray) -> Predictor:
    """Damped meta-train item means (unseen items get the global mean, see ``MovieLensCollection``)."""
    return lambda ep: item_means[ep.query_items]


def support_mean_predictor() -> Predictor:
    return lambda ep: np.full(len(ep.query_y), float(ep.support_y.mean()))


# -- pooled model, with and without fine-tuning ------------------------------------------------------


def train_pooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 3, batch: int = 256,
                 lr: float = 1e-3, seed: int = 0) -> nn.Module:
    """Plain MSE regression on all meta-train ratings: the 'one model for everyone' baseline."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


def model_predictor(model: nn.Module) -> Predictor:
    def predict(ep) -> np.ndarray:
        with torch.no_grad():
            return model(ep.query_x).numpy().ravel()

    return predict


def finetune_predictor(model: nn.Module, *, steps: int = 10, lr: float = 0.01) -> Predictor:
    """A copy of ``model`` fine-tuned by full-batch SGD on the user's K support ratings."""

    def predict(ep) -> np.ndarray:
        tuned = copy.deepcopy(model)
        opt = torch.optim.SGD(tuned.parameters(), lr=lr)
        for _ in range(steps):
            loss = nn.functional.mse_loss(tuned(ep.support_x), ep.support_y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return tuned(ep.query_x).numpy().ravel()

    return predict


def learner_predictor(learner, inner_steps: int | None = None) -> Predictor:
    """A metaauto learner adapted on the support (``learner.adapt``), one user at a time."""

    def predict(ep) -> np.ndarray:
        fn = learner.adapt(ep.support_x, ep.support_y, inner_steps=inner_steps)
        with torch.no_grad():
            return fn(ep.query_x).detach().numpy().ravel()

    return predict


def format_table(results: Iterable[tuple[int, RecsysResult]]) -> str:
    """Markdown: one row per (K, method), ``mean ± ci`` per metric, best per K in bold."""
    lines = ["| K | method | MAE ↓ | RMSE ↓ | nDCG@10 ↑ |", "|---|---|---|---|---|"]
    for shots, result in results:
        summary = result.summary()
        best = {
            "mae": min(s["mae"][0] for s in summary.values()),
            "rmse": min(s["rmse"][0] for s in summary.values()),
            "ndcg@10": max(s["ndcg@10"][0] for s in summary.values()),
        }
        for name, s in summary.items():
            cells = []
            for key in METRICS:
                mean, ci = s[key]
                cell = f"{mean:.4f} ± {ci:.4f}"
                cells.append(f"**{cell}**" if mean == best[key] else cell)
            lines.append(f"| {shots} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
