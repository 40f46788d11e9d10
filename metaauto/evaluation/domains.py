"""Domain-aware transfer: score an adapted meta-model with the metrics and baselines its domain uses.

The generic protocol (:func:`metaauto.evaluation.compare`) scores accuracy or MSE against the scratch and
pre-train baselines. That is the right check for promotion, but not how the two transfer domains are
judged in their fields:

* **MovieLens cold start** (:class:`~metaauto.tasks.movielens.MovieLensCollection`): each meta-test user
  gives K ratings and is scored on *all* their other ratings by MAE, RMSE and nDCG@10, against the global
  mean, the damped item mean, the user's support mean, a pooled model of the champion's architecture
  (with and without fine-tuning on the K ratings) and matrix factorisation with fold-in
  (:mod:`metaauto.evaluation.recsys`).
* **Heart disease across sites** (:class:`~metaauto.tasks.heart_disease.HeartDiseaseCollection`): K
  labelled patients per class of the held-out site, AUROC and balanced accuracy over random draws,
  against logistic regression on the support only, pooled logistic regression and gradient boosting,
  and pooled logistic regression fine-tuned on the support (:mod:`metaauto.evaluation.clinical`).
  A research benchmark, not a clinical tool.

:func:`transfer_report` dispatches on the collection and returns a :class:`DomainReport` (rows, the best
baseline per metric, markdown, MLflow metric names), so the ``transfer-to-domain`` flow and the
benchmark scripts only present it. :func:`pipeline_defaults` and :func:`default_model_name` hold the
per-domain defaults of ``metaauto pipeline`` (episode sizes, learners, registered names).

Leakage: the report refuses a model whose training collection (its recorded fingerprint, which covers
the data, the features and the task-to-split assignment) differs from the target's; otherwise the
"new" users or site could be ones the model was meta-trained on, or the features could be standardised
with statistics the model never saw.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from metaauto.errors import MetaautoError

MOVIELENS = "movielens"
HEART_DISEASE = "heart-disease"
DOMAINS = (MOVIELENS, HEART_DISEASE)

#: the metrics of each domain and whether higher is better
DOMAIN_METRICS: dict[str, dict[str, bool]] = {
    MOVIELENS: {"mae": False, "rmse": False, "ndcg@10": True},
    HEART_DISEASE: {"auroc": True, "balanced_accuracy": True},
}


class DomainTransferError(MetaautoError, ValueError):
    """The model cannot be scored on the domain as asked; the message says what to change."""


def domain_of(collection: Any) -> str | None:
    """``"movielens"``, ``"heart-disease"`` or ``None`` (a collection scored by the generic protocol)."""
    from metaauto.tasks.heart_disease import HeartDiseaseCollection
    from metaauto.tasks.movielens import MovieLensCollection

    if isinstance(collection, MovieLensCollection):
        return MOVIELENS
    if isinstance(collection, HeartDiseaseCollection):
        return HEART_DISEASE
    return None


# -- pipeline defaults -------------------------------------------------------------------------------


def _domain_name(collection: str) -> str | None:
    name = str(collection).lower()
    return name if name in DOMAINS else None


def default_val_site(target_site: str) -> str:
    """The validation site a pipeline uses when none is given: Cleveland (the largest site), or Hungary
    when Cleveland is the target. Search needs a ``"val"`` split; the held-out site must not be it."""
    return "hungary" if target_site == "cleveland" else "cleveland"


def pipeline_defaults(collection: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Episode sizes, learners and collection options ``metaauto pipeline`` uses for a domain.

    * movielens: 10 support and 10 query ratings per user (MeLU's setting), the gradient learners that
      solve regression and do not need second-order gradients through 10 steps (``anil``, ``fomaml``,
      ``metasgd``);
    * heart-disease: 2-way 5-shot episodes with 3 queries (the Swiss site has only 8 patients without
      disease), ``protonet``, ``anil`` and ``fomaml``, and a validation site so the search can validate
      (:func:`default_val_site`);
    * anything else: ``{}`` (the command's own defaults).
    """
    options = dict(options or {})
    domain = _domain_name(collection)
    if domain == MOVIELENS:
        return {"ways": None, "shots": 10, "queries": 10, "algorithms": ["anil", "fomaml", "metasgd"], "options": options}
    if domain == HEART_DISEASE:
        target = str(options.get("target_site", "switzerland"))
        options.setdefault("val_site", default_val_site(target))
        return {"ways": 2, "shots": 5, "queries": 3, "algorithms": ["protonet", "anil", "fomaml"], "options": options}
    return {"options": options}


def default_model_name(collection: str, options: Mapping[str, Any] | None, ways: int | None, shots: int) -> str:
    """``movielens-coldstart``, ``heart-disease-<target site>``, else ``<collection or file stem>-<ways>w<shots>s``."""
    options = dict(options or {})
    domain = _domain_name(collection)
    if domain == MOVIELENS:
        return "movielens-coldstart"
    if domain == HEART_DISEASE:
        return f"heart-disease-{options.get('target_site', 'switzerland')}"
    stem = Path(str(collection)).stem
    return f"{stem}-{ways}w{shots}s" if ways else f"{stem}-{shots}shot"


# -- the report --------------------------------------------------------------------------------------


def metric_key(name: str) -> str:
    """An MLflow-safe metric name (``ndcg@10`` -> ``ndcg_at_10``)."""
    return re.sub(r"[^A-Za-z0-9_.\- /]", "_", name.replace("@", "_at_"))


def method_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass
class DomainReport:
    """Every method's mean and 95% CI per metric on the same users (or draws), ours first.

    ``rows`` are ``{"method", "baseline": bool, <metric>: mean, "<metric>_ci95": half-width}``;
    ``units`` is the number of users (MovieLens) or support draws (heart disease) averaged over.
    """

    domain: str
    collection: str
    target: str
    ours: str
    shots: int
    units: int
    unit_name: str
    metrics: dict[str, bool]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def primary(self) -> str:
        return next(iter(self.metrics))

    def row(self, method: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["method"] == method)

    def best_baseline(self, metric: str) -> tuple[str, float]:
        baselines = [r for r in self.rows if r["baseline"]]
        if not baselines:
            raise DomainTransferError("the report has no baselines")
        pick = max if self.metrics[metric] else min
        best = pick(baselines, key=lambda r: r[metric])
        return best["method"], float(best[metric])

    def beats_best_baseline(self) -> dict[str, bool]:
        """Per metric: is the adapted model's mean strictly better than the best baseline's?"""
        out = {}
        for metric, higher in self.metrics.items():
            ours = self.row(self.ours)[metric]
            _, best = self.best_baseline(metric)
            out[metric] = ours > best if higher else ours < best
        return out

    def mlflow_metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for metric in self.metrics:
            key = metric_key(metric)
            ours = self.row(self.ours)
            metrics[f"transfer/{key}"] = float(ours[metric])
            metrics[f"transfer/{key}_ci95"] = float(ours[f"{metric}_ci95"])
            name, best = self.best_baseline(metric)
            metrics[f"transfer/best_baseline/{key}"] = best
            metrics[f"transfer/beats_best_baseline/{key}"] = float(self.beats_best_baseline()[metric])
            for r in self.rows:
                if r["baseline"]:
                    metrics[f"transfer/baseline/{method_key(r['method'])}/{key}"] = float(r[metric])
        return metrics

    def table(self) -> list[dict[str, Any]]:
        """Rows for a Prefect table artifact (rounded, one column per metric and CI)."""
        return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in self.rows]

    def markdown(self, title: str | None = None) -> str:
        arrows = {m: "↑" if higher else "↓" for m, higher in self.metrics.items()}
        best = {m: self.best_baseline(m)[1] for m in self.metrics}
        lines = [f"# {title or f'Transfer to {self.target}'}", "",
                 f"{self.domain}, K={self.shots}: mean ± 95% CI over {self.units} {self.unit_name}; every method sees "
                 "the same support sets. Bold: better than every baseline.", "",
                 "| method | " + " | ".join(f"{m} {arrows[m]}" for m in self.metrics) + " |",
                 "|---" * (len(self.metrics) + 1) + "|"]
        wins = self.beats_best_baseline()
        for r in self.rows:
            cells = []
            for m in self.metrics:
                cell = f"{r[m]:.4f} ± {r[m + '_ci95']:.4f}"
                if r["method"] == self.ours and wins[m]:
                    cell = f"**{cell}**"
                cells.append(cell)
            label = f"{r['method']} (adapted model)" if r["method"] == self.ours else r["method"]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        for m in self.metrics:
            name, value = self.best_baseline(m)
            verdict = "beats" if wins[m] else "does not beat"
            lines.append(f"* {m}: the adapted model ({self.row(self.ours)[m]:.4f}) {verdict} the best baseline, "
                         f"{name} ({value:.4f}).")
        lines += [f"* {note}" for note in self.notes]
        return "\n".join(lines)


def check_same_preparation(model: Any, collection: Any) -> None:
    """Refuse a model meta-trained on another preparation of the data (see the module docstring)."""
    spec = getattr(model, "spec", None)
    recorded = (getattr(spec, "collection", None) or {}).get("fingerprint")
    if recorded is None:
        return
    if recorded != collection.fingerprint:
        options = ("target_site/val_site" if domain_of(collection) == HEART_DISEASE else "split_seed/fractions/path")
        raise DomainTransferError(
            f"the model was meta-trained on collection {spec.collection.get('name')!r} with fingerprint {recorded}, "
            f"but the target {collection.name!r} has fingerprint {collection.fingerprint}: its held-out "
            f"{'site' if domain_of(collection) == HEART_DISEASE else 'users'} or its feature preparation differ from "
            f"the model's, so they may not be new to it. Load the target with the options the model was trained "
            f"with ({options})."
        )
    names = list(getattr(spec, "feature_names", []) or [])
    if names and names != [str(c) for c in getattr(collection, "feature_cols", names)]:
        raise DomainTransferError(f"the model's features {names} are not the collection's {collection.feature_cols}")


def _summary_rows(summary: Mapping[str, Mapping[str, tuple[float, float]]], ours: str) -> list[dict[str, Any]]:
    rows = []
    for method in [ours, *[m for m in summary if m != ours]]:
        row: dict[str, Any] = {"method": method, "baseline": method != ours}
        for metric, (mean, ci) in summary[method].items():
            row[metric], row[f"{metric}_ci95"] = float(mean), float(ci)
        rows.append(row)
    return rows


def movielens_report(
    learner: Any,
    collection: Any,
    *,
    shots: int = 10,
    split: str = "test",
    users: int | None = None,
    seed: int = 0,
    name: str | None = None,
    pooled_epochs: int = 3,
    finetune_steps: int = 10,
    finetune_lr: float = 0.01,
    mf_rank: int = 10,
    mf_reg: float = 5.0,
    mf_iterations: int = 10,
) -> DomainReport:
    """The adapted ``learner`` against the six recsys baselines on the ``split`` users with ``shots`` ratings.

    ``users`` caps the number of users (the first ones by id, the same for every method); ``None``: all.
    The pooled model copies the champion's backbone architecture (an MLP over the item features) with a
    1-output head, trained by plain regression on meta-train ratings.
    """
    import torch

    from metaauto.backbones import make_backbone
    from metaauto.evaluation import recsys

    learner.eval()
    ours = name or learner.name
    episodes = collection.user_episodes(split, shots=shots, seed=seed)
    if users is not None:
        episodes = episodes[:users]
    spec = getattr(getattr(learner, "model", None), "spec", None) or {}
    hidden = spec.get("hidden") if spec.get("name") == "mlp" else None
    torch.manual_seed(seed)
    pooled_model = make_backbone("mlp", collection.input_shape, 1, hidden=hidden or (64, 64))
    data = collection.pooled("train")
    pooled = recsys.train_pooled(pooled_model, data.x, data.y, epochs=pooled_epochs, seed=seed)
    u, i, r = collection.train_triples()
    mf = recsys.MatrixFactorization(rank=mf_rank, reg=mf_reg, iterations=mf_iterations, seed=seed).fit(
        u, i, r, n_items=len(collection.item_ids))
    predictors = {
        ours: recsys.learner_predictor(learner),
        "global mean": recsys.global_mean_predictor(collection.global_mean),
        "item mean": recsys.item_mean_predictor(collection.item_stats["mean"].to_numpy()),
        "user support mean": recsys.support_mean_predictor(),
        "pooled model": recsys.model_predictor(pooled),
        "pooled model + fine-tune": recsys.finetune_predictor(copy.deepcopy(pooled), steps=finetune_steps, lr=finetune_lr),
        "MF fold-in": mf.predictor(),
    }
    result = recsys.evaluate_recsys(episodes, predictors, seed=seed)
    return DomainReport(
        domain=MOVIELENS, collection=collection.name, target=f"{split} users of {collection.name}", ours=ours, shots=shots,
        units=result.users, unit_name=f"{split} users", metrics=dict(DOMAIN_METRICS[MOVIELENS]),
        rows=_summary_rows(result.summary(), ours),
        notes=[f"query: all of each user's other ratings; users with fewer than {shots + 1} ratings sit out"],
    )


def heart_disease_report(
    learner: Any,
    collection: Any,
    *,
    shots: int = 5,
    split: str = "test",
    draws: int = 100,
    seed: int = 0,
    name: str | None = None,
) -> DomainReport:
    """The adapted ``learner`` against the four clinical baselines on the held-out site's K-shot draws.

    Baselines are fitted on every non-held-out site (training and validation sites: the meta-learner
    used the validation site for model selection, so the baselines may use its patients too).
    """
    from metaauto.evaluation import clinical
    from metaauto.evaluation.metrics import mean_ci95

    if split == "train":
        raise DomainTransferError("heart-disease transfer scores a held-out site: use split 'test' (or 'val')")
    sites = collection.tasks_of(split)
    if not sites:
        raise DomainTransferError(f"heart-disease: split {split!r} has no site")
    site = sites[0]
    train_x, train_y = collection.split_data("train")
    if "val" in collection.task_split.values() and split != "val":
        vx, vy = collection.split_data("val")
        train_x, train_y = np.concatenate([train_x, vx]), np.concatenate([train_y, vy])
    site_x, site_y = collection.site_data(site)
    ours = name or learner.name
    methods = [clinical.MetaLearned(ours, learner)] + [m.fit(train_x, train_y.ravel()) for m in clinical.baseline_methods(seed)]
    try:
        result = clinical.evaluate_transfer(methods, site_x, site_y, shots=shots, draws=draws, seed=seed, site=site)
    except clinical.ClinicalEvaluationError as exc:
        raise DomainTransferError(f"{exc}; choose a smaller K (--shots) for this site") from None
    summary = {m: {k: mean_ci95(v) for k, v in s.items()} for m, s in result.scores.items()}
    positive = float(np.mean(site_y))
    return DomainReport(
        domain=HEART_DISEASE, collection=collection.name, target=f"site {site}", ours=ours, shots=shots, units=draws,
        unit_name="support draws", metrics=dict(DOMAIN_METRICS[HEART_DISEASE]), rows=_summary_rows(summary, ours),
        notes=[f"{site}: {len(site_y)} patients, {positive:.0%} with disease; K patients per class as support, "
               "the rest as query", "the CI measures which K patients are labelled, not another hospital",
               "research benchmark, not a clinical tool"],
    )


def transfer_report(learner: Any, collection: Any, *, shots: int, split: str = "test", tasks: int | None = None,
                    seed: int = 0, name: str | None = None, model: Any = None, **options: Any) -> DomainReport:
    """The domain's report for ``learner`` adapted to ``collection`` at K=``shots``.

    ``tasks`` is the number of users (MovieLens; ``None``: all) or of support draws (heart disease;
    ``None``: 100). ``model`` (a :class:`~metaauto.downstream.sklearn.MetaModel`) enables the preparation check
    of :func:`check_same_preparation`. ``options`` go to :func:`movielens_report` or
    :func:`heart_disease_report`. A collection of neither domain is a :class:`DomainTransferError`.
    """
    domain = domain_of(collection)
    if domain is None:
        raise DomainTransferError(f"collection {collection.name!r} is not a transfer domain ({', '.join(DOMAINS)})")
    if model is not None:
        check_same_preparation(model, collection)
    if domain == MOVIELENS:
        return movielens_report(learner, collection, shots=shots, split=split, users=tasks, seed=seed, name=name, **options)
    return heart_disease_report(learner, collection, shots=shots, split=split, draws=tasks or 100, seed=seed, name=name,
                                **options)
