"""Few-shot transfer to a held-out clinical site, scored against the baselines clinicians' data teams use.

Protocol (one held-out site, one ``K``): draw ``K`` labelled patients per class from the site (the
support set), score every method on the site's remaining patients (the query set), repeat over many
random draws with the same draws for every method. Metrics per draw are AUROC (threshold-free) and
balanced accuracy at the method's own decision rule (argmax / probability 0.5); balanced accuracy because
sites are very unbalanced (Switzerland is 93% positive). Reported: mean and 95% CI over draws
(``1.96 * std / sqrt(draws)``). The interval measures the variability of *which* K patients are labelled;
the held-out patients are the same in every draw, so it says nothing about sampling another hospital.

Research benchmark only: none of these models is a clinical tool.

A method is a :class:`Method`: ``fit(train_x, train_y)`` once on the pooled training sites (methods that
use no training-site data ignore it), then ``predict_proba(support_x, support_y, query_x)`` per draw,
returning ``P(class 1)`` for each query patient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from metaauto.errors import MetaautoError
from metaauto.evaluation.metrics import mean_ci95


class ClinicalEvaluationError(MetaautoError):
    """A held-out site cannot serve the requested protocol (too few patients of a class)."""


class Method:
    """A transfer method: fitted once on the training sites, then asked for probabilities per draw."""

    name = "method"

    def fit(self, train_x: np.ndarray, train_y: np.ndarray) -> "Method":
        return self

    def predict_proba(self, support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class SupportLogistic(Method):
    """Logistic regression on the K-shot support only (what a site could do alone)."""

    name = "lr-support"

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def predict_proba(self, support_x, support_y, query_x):
        model = LogisticRegression(C=self.C, max_iter=1000).fit(support_x, support_y)
        return model.predict_proba(query_x)[:, 1]


class PooledModel(Method):
    """A model trained on the three training sites, applied to the new site without adaptation."""

    def __init__(self, name: str, make: Callable[[], Any]) -> None:
        self.name, self.make = name, make

    def fit(self, train_x, train_y):
        self.model = self.make().fit(train_x, train_y)
        return self

    def predict_proba(self, support_x, support_y, query_x):
        return self.model.predict_proba(query_x)[:, 1]


def pooled_logistic() -> PooledModel:
    return PooledModel("lr-pooled", lambda: LogisticRegression(C=1.0, max_iter=2000))


def pooled_boosting(seed: int = 0) -> PooledModel:
    return PooledModel("gbm-pooled", lambda: HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed))


class FineTunedLogistic(Method):
    """The pooled logistic regression, fine-tuned on the support set from the pooled weights.

    A plain ``warm_start`` refit converges to the support-only optimum (the regularised problem has one
    minimum, wherever the solver starts), so the warm start is made to matter the way fine-tuning does:
    ``steps`` full-batch gradient steps on the support log-loss starting at the pooled coefficients, plus
    an L2 pull of strength ``prior`` towards them (a Gaussian prior centred on the pooled model).
    """

    name = "lr-pooled-finetuned"

    def __init__(self, steps: int = 100, lr: float = 0.1, prior: float = 0.1) -> None:
        self.steps, self.lr, self.prior = steps, lr, prior

    def fit(self, train_x, train_y):
        pooled = LogisticRegression(C=1.0, max_iter=2000).fit(train_x, train_y)
        self.w0 = np.concatenate([pooled.coef_[0], pooled.intercept_])
        return self

    def predict_proba(self, support_x, support_y, query_x):
        xs = np.hstack([support_x, np.ones((len(support_x), 1))])
        w = self.w0.copy()
        for _ in range(self.steps):
            p = 1.0 / (1.0 + np.exp(-xs @ w))
            grad = xs.T @ (p - support_y) / len(xs) + self.prior * (w - self.w0)
            w -= self.lr * grad
        xq = np.hstack([query_x, np.ones((len(query_x), 1))])
        return 1.0 / (1.0 + np.exp(-xq @ w))


class MetaLearned(Method):
    """A metaauto learner (already meta-trained on training-site episodes) adapted to the support set.

    ``learner.adapt(support_x, support_y)`` returns a predictor of logits ``[n, 2]``; class 1 is disease
    because the support labels passed in are the global 0/1 labels.
    """

    def __init__(self, name: str, learner: torch.nn.Module) -> None:
        self.name, self.learner = name, learner

    def predict_proba(self, support_x, support_y, query_x):
        self.learner.eval()
        sx = torch.as_tensor(support_x, dtype=torch.float32)
        sy = torch.as_tensor(support_y, dtype=torch.int64)
        predict = self.learner.adapt(sx, sy)
        with torch.no_grad():
            logits = predict(torch.as_tensor(query_x, dtype=torch.float32))
        return torch.softmax(logits.detach().double(), dim=-1)[:, 1].numpy()


def draw_support(y: np.ndarray, shots: int, rng: np.random.Generator, site: str = "site") -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``shots`` patients per class (support) and of all other patients (query)."""
    support = []
    for cls in (0, 1):
        members = np.flatnonzero(y == cls)
        if len(members) < shots + 1:
            raise ClinicalEvaluationError(
                f"{site}: class {cls} has {len(members)} patients; {shots}-shot transfer needs at least {shots + 1} "
                "(K for the support and one left to evaluate on)"
            )
        support.append(rng.choice(members, size=shots, replace=False))
    support_idx = np.concatenate(support)
    query = np.setdiff1d(np.arange(len(y)), support_idx)
    return support_idx, query


@dataclass
class TransferResult:
    """Per-method per-draw scores and their summaries for one site and one K."""

    site: str
    shots: int
    draws: int
    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for method, metrics in self.scores.items():
            row = {}
            for metric, values in metrics.items():
                mean, ci = mean_ci95(values)
                row[metric], row[f"{metric}_ci95"] = mean, ci
            out[method] = row
        return out


def evaluate_transfer(
    methods: Sequence[Method],
    site_x: np.ndarray,
    site_y: np.ndarray,
    *,
    shots: int,
    draws: int = 100,
    seed: int = 0,
    site: str = "site",
) -> TransferResult:
    """Score already-fitted ``methods`` on ``draws`` random K-shot draws from one held-out site.

    Every method sees the same draws, so differences between methods are paired.
    """
    site_y = np.asarray(site_y).reshape(-1).astype(np.int64)
    rng = np.random.default_rng(seed)
    result = TransferResult(site=site, shots=shots, draws=draws)
    for method in methods:
        result.scores[method.name] = {"auroc": [], "balanced_accuracy": []}
    for _ in range(draws):
        support, query = draw_support(site_y, shots, rng, site)
        qy = site_y[query]
        for method in methods:
            p = np.asarray(method.predict_proba(site_x[support], site_y[support], site_x[query]), dtype=np.float64)
            scores = result.scores[method.name]
            scores["auroc"].append(float(roc_auc_score(qy, p)))
            scores["balanced_accuracy"].append(float(balanced_accuracy_score(qy, (p >= 0.5).astype(np.int64))))
    return result


def baseline_methods(seed: int = 0) -> list[Method]:
    """The four baselines of the protocol, unfitted."""
    return [SupportLogistic(), pooled_logistic(), pooled_boosting(seed), FineTunedLogistic()]


def meta_train_learner(
    collection: Any,
    learner: str = "protonet",
    *,
    shots: int = 5,
    queries: int = 3,
    meta_steps: int = 300,
    meta_batch_size: int = 16,
    hidden: Sequence[int] = (64, 64),
    seed: int = 0,
    **hparams: Any,
) -> torch.nn.Module:
    """Meta-train ``learner`` on 2-way ``shots``-shot episodes of the collection's training sites.

    Metric learners get an MLP embedding; gradient learners an MLP with a 2-logit head. No validation
    split is used (the held-out site must not steer training), so training runs ``meta_steps`` steps.
    ``queries`` is small because the Swiss site has only 8 patients without disease.
    """
    from metaauto.backbones import MLP
    from metaauto.engine import TrainConfig, meta_train
    from metaauto.learners import make_learner
    from metaauto.learners.metric import MetricLearner
    from metaauto.learners.catalog import LEARNERS

    torch.manual_seed(seed)
    metric = issubclass(LEARNERS[learner], MetricLearner) if learner in LEARNERS else False
    model = MLP(collection.input_shape, out_features=None if metric else 2, hidden=hidden)
    built = make_learner(learner, model, **hparams)
    config = TrainConfig(
        ways=2, shots=shots, queries=queries, meta_batch_size=meta_batch_size, meta_steps=meta_steps,
        val_every=0, seed=seed, progress=False, device="cpu",
    )
    return meta_train(built, collection, config).learner
