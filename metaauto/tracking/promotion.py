"""Registered meta-models: versions, the ``champion`` alias, evidence-based promotion and rollback.

``champion`` names the version applications should use (``models:/NAME@champion``); ``previous`` the one
it replaced. A new version becomes champion only if it is *measurably* better on the very same
meta-test episodes: the per-task metrics of candidate and champion are paired task by task and a
one-sided test (Wilcoxon signed-rank by default, or a paired t-test) must find the mean improvement
larger than ``margin`` at level ``alpha``. Pairing removes the between-task variance, which dominates
few-shot results, so real improvements of a point or two are detected on a few hundred tasks.

Every decision, promoted or not, is written on the candidate version as ``metaauto.promotion.*`` tags and
appended to its description, so the registry page explains why each version is or is not champion.

Promotions and rollbacks on one name are serialised by a lock held in the registry itself: a registered
model ``NAME.lock`` whose creation is atomic in every MLflow store (a unique name). It works across
threads, processes and machines sharing a tracking server; a lock left behind by a killed process is
broken after ``stale_after`` seconds. Under the lock the champion is re-read, compared and moved, so two
racing promotions behave as if they ran one after the other.

(Slightly over 400 lines: the lock, the evidence, the decision and the rollback are one protocol on one
registered model, and read best together.)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from scipy import stats

from metaauto.errors import MetaautoError
from metaauto.evaluation.report import EvaluationReport
from metaauto.tracking.store import get_client

CHAMPION = "champion"
PREVIOUS = "previous"
TAG = "metaauto.promotion."
LOCK_SUFFIX = ".lock"
#: run artifact holding the meta-test evaluation (see metaauto.tracking.training)
REPORT_ARTIFACT = "evaluation/report.json"
TESTS = ("wilcoxon", "ttest")


class RegistryError(MetaautoError, ValueError):
    """A registry operation cannot be carried out as asked (unknown name, no previous champion ...)."""


# --------------------------------------------------------------------------------------------- lock


@contextlib.contextmanager
def registry_lock(
    name: str, client: MlflowClient | None = None, timeout: float = 120.0, stale_after: float = 600.0
) -> Iterator[None]:
    """Hold the promotion lock of registered model ``name`` (see the module docstring)."""
    client = client or get_client()
    lock = name + LOCK_SUFFIX
    holder = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            client.create_registered_model(
                lock,
                tags={"metaauto.lock": "true", "metaauto.lock.holder": holder},
                description=f"Held by metaauto while it moves the aliases of {name!r}; deleted when done.",
            )
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        _break_if_stale(client, lock, stale_after)
        if time.monotonic() > deadline:
            raise RegistryError(f"could not lock {name!r} within {timeout:.0f}s: registered model {lock!r} is held")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    try:
        yield
    finally:
        client.delete_registered_model(lock)


def _break_if_stale(client: MlflowClient, lock: str, stale_after: float) -> None:
    try:
        held = client.get_registered_model(lock)
    except MlflowException:
        return  # released meanwhile
    age = time.time() - held.creation_timestamp / 1000.0
    if age > stale_after:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(lock)


# ----------------------------------------------------------------------------------- registration


def register(
    name: str,
    model_id: str,
    *,
    client: MlflowClient | None = None,
    tags: dict[str, Any] | None = None,
    description: str | None = None,
) -> ModelVersion:
    """Register the logged model ``model_id`` as a new version of ``name`` (created if needed)."""
    client = client or get_client()
    if name.endswith(LOCK_SUFFIX):
        raise RegistryError(f"registered model names ending in {LOCK_SUFFIX!r} are reserved for metaauto's locks")
    logged = client.get_logged_model(model_id)
    try:
        client.create_registered_model(name, description="Meta-models registered by metaauto.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # The source is the artifact location rather than ``models:/<id>``: MLflow's SQL registry resolves
    # the latter through the process-global tracking URI, which may point elsewhere.
    return client.create_model_version(
        name,
        source=logged.artifact_location,
        run_id=logged.source_run_id,
        model_id=model_id,
        tags={k: str(v) for k, v in (tags or {}).items()},
        description=description,
    )


# ----------------------------------------------------------------------------------------- evidence


@dataclass(frozen=True)
class Evidence:
    """Per-task meta-test values of one model version, and the episodes they were measured on."""

    metric: str
    per_task: list[float]
    episodes: dict[str, Any]

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"


def read_evidence(client: MlflowClient, version: ModelVersion) -> Evidence:
    """The evaluation report the version's training run logged (``evaluation/report.json``)."""
    if not version.run_id:
        raise RegistryError(f"version {version.version} of {version.name!r} has no source run, hence no evaluation")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(version.run_id, REPORT_ARTIFACT, tmp)
        except (MlflowException, OSError) as exc:
            raise RegistryError(
                f"run {version.run_id} of {version.name!r} version {version.version} has no {REPORT_ARTIFACT}: {exc}"
            ) from None
        with open(path) as f:
            report = EvaluationReport.from_dict(json.load(f))
    return Evidence(metric=report.metric, per_task=[float(v) for v in report.learner.per_task],
                    episodes=report.episodes.to_dict())


# --------------------------------------------------------------------------------------- decisions


@dataclass
class PromotionDecision:
    """Why a version was, or was not, made champion."""

    name: str
    version: str
    promoted: bool
    reason: str
    champion_before: str | None
    metric: str | None = None
    test: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    mean_difference: float | None = None
    ci95: float | None = None
    margin: float = 0.0
    alpha: float = 0.05
    n_tasks: int | None = None
    episodes: dict[str, Any] = field(default_factory=dict)
    decided_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def tags(self) -> dict[str, str]:
        values = {
            "decision": "promoted" if self.promoted else "rejected",
            "reason": self.reason,
            "compared_to": self.champion_before or "none",
            "metric": self.metric,
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "mean_difference": self.mean_difference,
            "margin": self.margin,
            "alpha": self.alpha,
            "n_tasks": self.n_tasks,
            "episodes": json.dumps(self.episodes, sort_keys=True) if self.episodes else None,
            "decided_at": self.decided_at,
        }
        return {TAG + k: _fmt(v) for k, v in values.items() if v is not None}

    def describe(self) -> str:
        verdict = "PROMOTED to champion" if self.promoted else "NOT promoted"
        lines = [f"[{self.decided_at}] {verdict}: {self.reason}"]
        if self.test is not None:
            lines.append(
                f"  {self.test} (one-sided) on {self.n_tasks} paired meta-test tasks: mean improvement "
                f"{_fmt(self.mean_difference)} +- {_fmt(self.ci95)} {self.metric}, p = {_fmt(self.p_value)} "
                f"(alpha {self.alpha}, margin {self.margin})"
            )
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def paired_test(
    candidate: list[float], champion: list[float], *, higher_is_better: bool, margin: float, alpha: float, test: str
) -> tuple[bool, float, float, float, float]:
    """``(better, statistic, p_value, mean improvement, its 95% CI half-width)`` of a one-sided paired test.

    The improvement is ``candidate - champion`` for accuracy and ``champion - candidate`` for MSE, so it is
    positive when the candidate is better; H1 is "mean improvement > margin".
    """
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(champion, dtype=np.float64)
    diff = (a - b) if higher_is_better else (b - a)
    mean = float(diff.mean())
    ci95 = float(1.96 * diff.std() / math.sqrt(len(diff)))
    shifted = diff - margin
    if np.allclose(shifted, 0.0):
        return False, 0.0, 1.0, mean, ci95
    if test == "wilcoxon":
        result = stats.wilcoxon(shifted, alternative="greater", zero_method="zsplit")
    else:
        result = stats.ttest_1samp(shifted, 0.0, alternative="greater")
    p = float(result.pvalue)
    return bool(p < alpha and mean > margin), float(result.statistic), p, mean, ci95


def _record(client: MlflowClient, decision: PromotionDecision, extra_tags: dict[str, str] | None = None) -> None:
    for key, value in {**decision.tags(), **(extra_tags or {})}.items():
        client.set_model_version_tag(decision.name, decision.version, key, str(value)[:5000])
    _append_description(client, decision.name, decision.version, decision.describe())


def _append_description(client: MlflowClient, name: str, version: str, text: str) -> None:
    current = client.get_model_version(name, version).description or ""
    client.update_model_version(name, version, description=(current + "\n\n" + text).strip())


def promote(
    name: str,
    version: str | int,
    *,
    client: MlflowClient | None = None,
    margin: float = 0.0,
    alpha: float = 0.05,
    test: str = "wilcoxon",
    rescore: Any = None,
    lock_timeout: float = 120.0,
) -> PromotionDecision:
    """Make ``version`` the champion of ``name`` if it beats the current one (see the module docstring).

    ``rescore(version, episodes) -> per-task values`` is called when the champion was evaluated on other
    episodes than the candidate (another seed or task count), to score it on the candidate's episodes;
    without it such a candidate is not promoted, and the decision says why.
    """
    if test not in TESTS:
        raise RegistryError(f"unknown test {test!r}; expected one of {TESTS}")
    client = client or get_client()
    version = str(version)
    candidate = client.get_model_version(name, version)
    evidence = read_evidence(client, candidate)
    with registry_lock(name, client, timeout=lock_timeout):
        champion = _alias_version(client, name, CHAMPION)
        common = dict(name=name, version=version, metric=evidence.metric, margin=margin, alpha=alpha, episodes=evidence.episodes)
        if champion is None:
            decision = PromotionDecision(
                promoted=True, reason="first champion: no version held the alias", champion_before=None,
                n_tasks=len(evidence.per_task), **common,
            )
        elif str(champion.version) == version:
            decision = PromotionDecision(
                promoted=False, reason="already the champion", champion_before=version, **common
            )
        else:
            decision = _compare(client, candidate, evidence, champion, common, test, rescore)
        if decision.promoted:
            client.set_registered_model_alias(name, CHAMPION, version)
            if champion is not None:
                client.set_registered_model_alias(name, PREVIOUS, str(champion.version))
        _record(client, decision, {TAG + "replaced": str(champion.version)} if decision.promoted and champion else None)
    return decision


def _compare(
    client: MlflowClient,
    candidate: ModelVersion,
    evidence: Evidence,
    champion: ModelVersion,
    common: dict[str, Any],
    test: str,
    rescore: Any,
) -> PromotionDecision:
    try:
        reference = read_evidence(client, champion)
    except RegistryError as exc:
        reference = None
        missing = str(exc)
    if reference is not None and reference.metric != evidence.metric:
        return PromotionDecision(
            promoted=False, champion_before=str(champion.version),
            reason=f"champion v{champion.version} is scored by {reference.metric}, the candidate by {evidence.metric}",
            **common,
        )
    if reference is not None and reference.episodes == evidence.episodes:
        champion_values = reference.per_task
        source = "both evaluation reports"
    elif rescore is not None:
        champion_values = [float(v) for v in rescore(champion, evidence.episodes)]
        source = f"champion v{champion.version} re-scored on the candidate's episodes"
    else:
        why = missing if reference is None else "it was evaluated on other meta-test episodes"
        return PromotionDecision(
            promoted=False, champion_before=str(champion.version),
            reason=f"cannot pair with champion v{champion.version}: {why}; re-score it on the same episodes",
            **common,
        )
    if len(champion_values) != len(evidence.per_task):
        raise RegistryError(
            f"champion v{champion.version} has {len(champion_values)} per-task values, the candidate {len(evidence.per_task)}"
        )
    better, statistic, p, mean, ci95 = paired_test(
        evidence.per_task, champion_values, higher_is_better=evidence.higher_is_better,
        margin=common["margin"], alpha=common["alpha"], test=test,
    )
    verdict = "better than" if better else "not measurably better than"
    return PromotionDecision(
        promoted=better, champion_before=str(champion.version), test=test, statistic=statistic, p_value=p,
        mean_difference=mean, ci95=ci95, n_tasks=len(champion_values),
        reason=f"{verdict} champion v{champion.version} on the same {len(champion_values)} meta-test tasks ({source})",
        **common,
    )


# ----------------------------------------------------------------------------------------- rollback


@dataclass
class Rollback:
    name: str
    demoted: str
    champion: str
    previous: str | None


def rollback(name: str, *, client: MlflowClient | None = None, lock_timeout: float = 120.0) -> Rollback:
    """Give ``champion`` back to the ``previous`` version; ``previous`` moves to the one that version replaced."""
    client = client or get_client()
    with registry_lock(name, client, timeout=lock_timeout):
        current = _alias_version(client, name, CHAMPION)
        previous = _alias_version(client, name, PREVIOUS)
        if current is None:
            raise RegistryError(f"{name!r} has no champion to roll back")
        if previous is None:
            raise RegistryError(f"{name!r} has no previous champion to roll back to (champion is v{current.version})")
        client.set_registered_model_alias(name, CHAMPION, str(previous.version))
        before = previous.tags.get(TAG + "replaced")
        if before and before != str(previous.version) and _exists(client, name, before):
            client.set_registered_model_alias(name, PREVIOUS, before)
        else:
            before = None
            client.delete_registered_model_alias(name, PREVIOUS)
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        client.set_model_version_tag(name, current.version, TAG + "rolled_back_at", stamp)
        client.set_model_version_tag(name, current.version, TAG + "decision", "rolled back")
        _append_description(client, name, current.version, f"[{stamp}] ROLLED BACK: champion returned to v{previous.version}")
        _append_description(client, name, previous.version, f"[{stamp}] champion again after rollback of v{current.version}")
    return Rollback(name=name, demoted=str(current.version), champion=str(previous.version), previous=before)


def _exists(client: MlflowClient, name: str, version: str) -> bool:
    try:
        client.get_model_version(name, version)
        return True
    except MlflowException:
        return False
