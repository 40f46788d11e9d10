"""Data behind ``metaauto dashboard``: plain functions over MLflow and the Optuna storage.

The Streamlit app (:mod:`metaauto.dashboard.app`) only lays these out; everything it shows is computed
here, so it is testable without a browser and the same numbers are available from Python. Nothing here
writes to either store.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from metaauto.errors import MetaautoError
from metaauto.tracking.promotion import CHAMPION, PREVIOUS

#: environment variable naming the Optuna storage the study explorer reads (default: the project's SQLite)

#: Published meta-test accuracies (%) on Omniglot, keyed by (ways, shots). Sources: MAML (Finn et al. 2017,
#: table 1), first-order MAML (same table), Reptile (Nichol et al. 2018, table 1, transductive), Prototypical
#: Networks (Snell et al. 2017, table 1), Matching Networks (Vinyals et al. 2016, table 1), Meta-SGD (Li et al.
#: 2017, table 1), Relation Networks (Sung et al. 2018, table 1).
PAPER_ANCHORS: dict[str, dict[tuple[int, int], dict[str, float]]] = {
    "omniglot": {
        (5, 1): {"maml": 98.7, "fomaml": 98.3, "reptile": 97.68, "protonet": 98.8, "matchingnet": 98.1,
                   "metasgd": 99.53, "relationnet": 99.6},
        (5, 5): {"maml": 99.9, "fomaml": 99.2, "reptile": 99.48, "protonet": 99.7, "matchingnet": 98.9,
                   "metasgd": 99.93, "relationnet": 99.8},
        (20, 1): {"maml": 95.8, "fomaml": 89.4, "reptile": 89.43, "protonet": 96.0, "matchingnet": 93.8,
                    "metasgd": 95.93, "relationnet": 97.6},
        (20, 5): {"maml": 98.9, "fomaml": 97.9, "reptile": 97.12, "protonet": 98.9, "matchingnet": 98.5,
                    "metasgd": 98.97, "relationnet": 99.1},
    },
}


class DashboardError(MetaautoError):
    """The dashboard cannot read what it was pointed at; the message names the store or the study."""


def storage_url() -> str:
    """The study storage: ``METAAUTO_SEARCH_STORAGE`` if set, else the project's default SQLite file (the
    search's own rule, :func:`metaauto.search.storage.resolve_storage_url`)."""
    from metaauto.search.storage import resolve_storage_url

    return resolve_storage_url()


def paper_anchors(collection: str | None, ways: Any, shots: Any) -> dict[str, float]:
    """Published accuracies (as fractions, like our metrics) for a benchmark shape, or ``{}``."""
    try:
        key = (int(ways), int(shots))
    except (TypeError, ValueError):
        return {}
    table = PAPER_ANCHORS.get((collection or "").lower(), {}).get(key, {})
    return {name: value / 100.0 for name, value in table.items()}


# --------------------------------------------------------------------------------------------- leaderboard
@dataclass
class VersionRow:
    """One registered version with the figures its training run logged."""

    model: str
    version: str
    aliases: list[str]
    run_id: str | None
    algorithm: str | None
    collection: str | None
    task_shape: str | None
    metric: str | None
    mean: float | None
    ci95: float | None
    baselines: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    @property
    def is_champion(self) -> bool:
        return CHAMPION in self.aliases


def _run_figures(client: MlflowClient, run_id: str | None) -> tuple[dict[str, float], dict[str, str]]:
    if not run_id:
        return {}, {}
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return {}, {}
    return dict(run.data.metrics), dict(run.data.params)


def split_metrics(metrics: dict[str, float]) -> tuple[str | None, float | None, float | None, dict[str, tuple[float, float | None]]]:
    """``(metric, mean, ci95, {baseline: (mean, ci95)})`` from the names ``evaluate_run`` logs:
    ``meta_test/<metric>``, ``meta_test/ci95``, ``baseline/<name>/<metric>``, ``baseline/<name>/ci95``."""
    metric = next((k.split("/", 1)[1] for k in metrics if k.startswith("meta_test/") and k != "meta_test/ci95"), None)
    mean = metrics.get(f"meta_test/{metric}") if metric else None
    baselines: dict[str, tuple[float, float | None]] = {}
    if metric:
        for key, value in metrics.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "baseline" and parts[2] == metric:
                baselines[parts[1]] = (value, metrics.get(f"baseline/{parts[1]}/ci95"))
    return metric, mean, metrics.get("meta_test/ci95"), baselines


def model_versions(client: MlflowClient, name: str) -> list[VersionRow]:
    """Every version of registered model ``name``, newest first, with its run's meta-test figures."""
    model = client.get_registered_model(name)
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        metrics, params = _run_figures(client, mv.run_id)
        metric, mean, ci, baselines = split_metrics(metrics)
        tags = mv.tags or {}
        rows.append(VersionRow(
            model=name, version=str(mv.version), aliases=sorted(aliases.get(str(mv.version), [])), run_id=mv.run_id,
            algorithm=tags.get("algorithm"), collection=tags.get("collection"), task_shape=tags.get("task_shape"),
            metric=metric, mean=mean, ci95=ci, baselines=baselines, params=params,
        ))
    return sorted(rows, key=lambda r: int(r.version), reverse=True)


def leaderboard(client: MlflowClient) -> pd.DataFrame:
    """One row per registered model: its champion's figures, baselines, paper anchors and version count.

    Models without a champion show their newest version. ``anchor_best`` is the best published
    accuracy for the same benchmark shape (Omniglot only), so a gap to the literature is visible.
    """
    rows = []
    for model in client.search_registered_models():
        versions = model_versions(client, model.name)
        if not versions:
            continue
        shown = next((v for v in versions if v.is_champion), versions[0])
        ways = shots = None
        if shown.params:
            ways, shots = shown.params.get("ways"), shown.params.get("shots")
        anchors = paper_anchors(shown.collection, ways, shots)
        row = {
            "model": model.name,
            "champion": shown.version if shown.is_champion else None,
            "versions": len(versions),
            "algorithm": shown.algorithm,
            "collection": shown.collection,
            "task_shape": shown.task_shape,
            "metric": shown.metric,
            "meta_test": shown.mean,
            "ci95": shown.ci95,
            "paper": anchors.get(shown.algorithm or "") if anchors else None,
            "paper_best": max(anchors.values()) if anchors else None,
        }
        for name, (mean, ci) in shown.baselines.items():
            row[f"baseline/{name}"] = mean
            row[f"baseline/{name}/ci95"] = ci
        rows.append(row)
    return pd.DataFrame(rows)


def versions_frame(versions: list[VersionRow]) -> pd.DataFrame:
    """The version table of one model (for display)."""
    return pd.DataFrame([
        {"version": v.version, "aliases": ", ".join(v.aliases), "algorithm": v.algorithm, "metric": v.metric,
         "meta_test": v.mean, "ci95": v.ci95,
         **{f"baseline/{n}": m for n, (m, _) in v.baselines.items()}, "run_id": v.run_id}
        for v in versions
    ])


def comparison_frame(version: VersionRow, ways: Any = None, shots: Any = None) -> pd.DataFrame:
    """Learner vs baselines vs paper anchors as ``name, kind, mean, ci95`` rows (the leaderboard chart)."""
    rows = []
    if version.mean is not None:
        rows.append({"name": version.algorithm or "learner", "kind": "this model", "mean": version.mean, "ci95": version.ci95})
    for name, (mean, ci) in version.baselines.items():
        rows.append({"name": name, "kind": "baseline", "mean": mean, "ci95": ci})
    ways = ways if ways is not None else version.params.get("ways")
    shots = shots if shots is not None else version.params.get("shots")
    for name, value in paper_anchors(version.collection, ways, shots).items():
        rows.append({"name": f"{name} (paper)", "kind": "paper", "mean": value, "ci95": None})
    return pd.DataFrame(rows, columns=["name", "kind", "mean", "ci95"])


# --------------------------------------------------------------------------------------------- studies
def study_names(url: str | None = None) -> list[str]:
    """Names of the studies in the storage (empty when the storage holds none yet)."""
    import optuna

    from metaauto.search.storage import open_storage
    from metaauto.urls import redact

    url = url or storage_url()
    try:
        storage = open_storage(url)
        return sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
    except Exception as exc:  # SearchError from open_storage, SQLAlchemy errors, an unreadable journal ...
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DashboardError(f"cannot read studies from {redact(url)}: {detail.replace(url, redact(url))}") from None


def load_study(name: str, url: str | None = None) -> Any:
    import optuna

    from metaauto.search.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(url or storage_url()))


def trials_frame(study: Any) -> pd.DataFrame:
    """One row per trial: number, state, value, algorithm, start/end, duration, last reported step, reason."""
    from metaauto.search.objective import REASON

    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({
            "trial": t.number,
            "state": t.state.name,
            "value": t.value if t.values else None,
            "algorithm": t.params.get("algorithm"),
            "start": t.datetime_start,
            "complete": t.datetime_complete,
            "duration_s": t.duration.total_seconds() if t.duration else None,
            "last_step": t.last_step,
            "reason": t.user_attrs.get(REASON),
            **{f"param/{k}": v for k, v in t.params.items() if k != "algorithm"},
        })
    return pd.DataFrame(rows)


def best_so_far(frame: pd.DataFrame, direction: str) -> pd.DataFrame:
    """Completed trials in completion order with the running best value (``direction`` is
    ``"minimize"``/``"maximize"`` or Optuna's ``StudyDirection``)."""
    done = frame[(frame["state"] == "COMPLETE") & frame["value"].notna()].sort_values(["complete", "trial"]).copy()
    maximize = "MAXIMIZE" in str(direction).upper()
    done["best"] = done["value"].cummax() if maximize else done["value"].cummin()
    return done[["trial", "complete", "algorithm", "value", "best"]].reset_index(drop=True)


def by_algorithm(frame: pd.DataFrame) -> pd.DataFrame:
    """Per algorithm: trials in each state and the best completed value."""
    if frame.empty:
        return pd.DataFrame(columns=["algorithm"])
    counts = frame.pivot_table(index="algorithm", columns="state", values="trial", aggfunc="count", fill_value=0)
    best = frame[frame["state"] == "COMPLETE"].groupby("algorithm")["value"].agg(["min", "max"])
    return counts.join(best, how="left").reset_index()


def importances(study: Any) -> dict[str, float]:
    """fANOVA parameter importances, or ``{}`` when too few trials completed to estimate them."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # one distinct value per parameter, or conditional spaces with no overlap
        return {}


# --------------------------------------------------------------------------------------------- try it
def champion_uri(name: str) -> str:
    return f"models:/{name}@{CHAMPION}"


@dataclass
class EpisodeResult:
    """An adapted episode: images (``[n, H, W]`` in 0..1), labels and the model's query predictions."""

    support_images: np.ndarray
    support_labels: np.ndarray
    query_images: np.ndarray
    query_labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.query_labels).mean())


def _images(x: Any, spec: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32).reshape(len(x), *spec.input_shape)
    arr = arr[:, 0] if arr.ndim == 4 and arr.shape[1] == 1 else arr
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def draw_episode(model: Any, *, seed: int = 0, queries: int = 2, split: str = "test", data_dir: Any = None) -> EpisodeResult:
    """Sample one meta-test episode of the model's own image collection, adapt, and predict its queries."""
    from metaauto.tasks import load_collection

    spec = model.spec
    if spec.task_type != "classification" or spec.encoding != "pixels":
        raise DashboardError(f"drawing an image episode needs an image classifier; this model is {spec.task_type} on {spec.encoding}")
    name = spec.collection.get("name")
    if not name:
        raise DashboardError("the model does not record the collection it was trained on")
    collection = load_collection(name, data_dir)
    ways, shots = spec.episode.get("ways") or 5, spec.episode.get("shots") or 1
    batch = collection.sample(split, ways=ways, shots=shots, queries=queries, tasks=1, seed=seed)
    sx, sy = batch.support_x[0].reshape(len(batch.support_x[0]), -1).numpy(), batch.support_y[0].numpy()
    qx, qy = batch.query_x[0].reshape(len(batch.query_x[0]), -1).numpy(), batch.query_y[0].numpy()
    proba = model.adapt_predict(sx, sy, qx)
    return EpisodeResult(_images(sx, spec), sy, _images(qx, spec), qy, proba.argmax(axis=1), proba)


def example_frame(model: Any, *, seed: int = 0, data_dir: Any = None) -> pd.DataFrame:
    """A one-task request in the serving schema from the model's collection (the CSV template to download)."""
    from metaauto.downstream.pyfunc import episode_frame
    from metaauto.tasks import load_collection

    spec = model.spec
    collection = load_collection(spec.collection["name"], data_dir)
    ways = spec.episode.get("ways") if spec.task_type == "classification" else None
    batch = collection.sample("test", ways=ways, shots=spec.episode.get("shots") or 1, queries=2, tasks=1, seed=seed)
    return episode_frame(model, batch, tasks=1)


def predict_csv(model: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """Adapt to each task of an uploaded request (support rows labelled, query rows not) and predict."""
    from metaauto.downstream.pyfunc import predict_frame

    return predict_frame(model, frame)


def fmt_ci(mean: float | None, ci: float | None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.4f}" + (f" ± {ci:.4f}" if ci is not None and not (isinstance(ci, float) and math.isnan(ci)) else "")


__all__ = [
    "CHAMPION", "PREVIOUS", "PAPER_ANCHORS", "DashboardError", "EpisodeResult", "VersionRow",
    "best_so_far", "by_algorithm", "champion_uri", "comparison_frame", "draw_episode", "example_frame", "fmt_ci",
    "importances", "leaderboard", "load_study", "model_versions", "paper_anchors", "predict_csv", "split_metrics",
    "storage_url", "study_names", "trials_frame", "versions_frame",
]
