"""The study itself: its pruner and name, how a new one starts, how an interrupted one resumes, how a
finished one is remembered and summarised (:class:`SearchResult`).

A new study gets the collection's fingerprint and meta-features, then the published configuration of
every allowed algorithm enqueued before anything is sampled -- so the first trials are exactly what a
user would otherwise hand-tune from, and the best trial can only match or beat them -- then, with warm
start, the best configurations of the most similar past studies (:mod:`metaauto.search.knowledge`).
Every finished study is recorded there for later ones. The lifecycle that uses these steps is
:class:`metaauto.search.session.SearchSession`.
"""

from __future__ import annotations

import sqlite3
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from metaauto.search.knowledge import DEFAULT_K, WARM_ATTR, KnowledgeBase, meta_features, warm_start_configs
from metaauto.search.objective import REASON, Budget
from metaauto.search.space import SearchError, SearchSpace
from metaauto.search.storage import trial_id
from metaauto.urls import redact
from metaauto.search.tracking import leaderboard, leaderboard_records
from metaauto.tracking.training import TrackedTraining

PRUNERS = ("hyperband", "median", "successive_halving", "none")
#: the states that count towards a study's ``trials``
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
FINGERPRINT_ATTR = "collection.fingerprint"


def make_pruner(name: str, budget: Budget) -> optuna.pruners.BasePruner:
    """Pruners measure resource in meta-steps: the first report comes after ``val_every`` steps."""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=budget.val_every, max_resource=budget.max_steps, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=budget.val_every, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SearchError(f"unknown pruner {name!r}; expected one of {', '.join(PRUNERS)}")


@dataclass
class SearchResult:
    """What a search found; ``final`` is the tracked training of the best configuration, once it ran."""

    study_name: str
    #: the storage URL without credentials
    storage: str
    parent_run_id: str | None
    states: dict[str, int]
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    #: every finished trial, best first (:func:`metaauto.search.tracking.leaderboard_records`)
    leaderboard: list[dict[str, Any]]
    plots_skipped: dict[str, str] = field(default_factory=dict)
    final: TrackedTraining | None = None

    @classmethod
    def from_study(cls, study: optuna.Study, url: str, parent_run_id: str | None = None) -> "SearchResult":
        trials = study.get_trials(deepcopy=False)
        states: dict[str, int] = {}
        for t in trials:
            states[t.state.name] = states.get(t.state.name, 0) + 1
        best = study.best_trial if any(t.state == TrialState.COMPLETE for t in trials) else None
        return cls(
            study_name=study.study_name, storage=redact(url), parent_run_id=parent_run_id, states=states,
            best_trial=best.number if best else None, best_value=best.value if best else None,
            best_params=dict(best.params) if best else {}, leaderboard=leaderboard_records(leaderboard(study)),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``metaauto search --json``)."""
        return {
            "study": self.study_name, "storage": self.storage, "parent_run_id": self.parent_run_id,
            "states": self.states, "best_trial": self.best_trial, "best_value": self.best_value,
            "best_params": self.best_params, "leaderboard": self.leaderboard, "plots_skipped": self.plots_skipped,
            "final": self.final.summary().to_dict() if self.final is not None else None,
        }


def check_fingerprint(study: optuna.Study, collection: Any) -> None:
    """A study searches one collection: resuming or joining it with another one is an error."""
    searched = study.user_attrs.get(FINGERPRINT_ATTR)
    if searched not in (None, collection.fingerprint):
        raise SearchError(f"study {study.study_name!r} searched collection {searched}, not {collection.name} "
                          f"({collection.fingerprint}); name another study")


def requeue_interrupted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    """Fail the trials a stopped search left RUNNING and queue their parameters again; ``storage`` is the
    study's (the reason is written through it). Only for a study no other process is running trials of."""
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial_id(storage, study.study_name, trial.number), REASON,
                                    "interrupted: the search process stopped")
        study.tell(trial.number, state=TrialState.FAIL)
        # a trial taken from the queue holds its enqueued values (Optuna's "fixed_params") until it suggests them
        params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        study.enqueue_trial(params, user_attrs={"retried_from": trial.number})
        count += 1
    return count


def seed_study(study: optuna.Study, collection: Any, space: SearchSpace, ways: int | None, shots: int, *,
               warm_start: bool = True, knowledge: KnowledgeBase | str | None = None, warm_k: int = DEFAULT_K) -> None:
    """What a new study starts with: the collection's fingerprint and meta-features, the published defaults
    of every allowed algorithm, then (``warm_start``) the best configurations of the nearest past studies.

    """
    study.set_user_attr(FINGERPRINT_ATTR, collection.fingerprint)
    defaults = [space.defaults(algorithm) for algorithm in space.algorithms]
    for values in defaults:
        study.enqueue_trial(values, user_attrs={"enqueued": "published defaults"})
    features = meta_features(collection, ways, shots)
    study.set_user_attr("metaauto.meta_features", features)
    if not warm_start:
        return
    kb = knowledge if isinstance(knowledge, KnowledgeBase) else KnowledgeBase(knowledge)
    borrowed = []
    for past, values in warm_start_configs(space, kb.nearest(features, warm_k, exclude=study.study_name), skip=defaults):
        study.enqueue_trial(values, user_attrs={"enqueued": f"warm start from study {past.study}",
                                                "warm_start.distance": round(past.distance, 6)})
        borrowed.append({"study": past.study, "distance": past.distance, "best_value": past.best_value})
    study.set_user_attr(WARM_ATTR, borrowed)


def remember_study(study: optuna.Study, collection: Any, ways: int | None, shots: int,
                   knowledge: KnowledgeBase | str | None = None) -> None:
    """Record a finished study's best configuration in the knowledge base for later warm starts."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return
    best = study.best_trial
    features = study.user_attrs.get("metaauto.meta_features") or meta_features(collection, ways, shots)
    try:
        kb = knowledge if isinstance(knowledge, KnowledgeBase) else KnowledgeBase(knowledge)
        kb.record(study.study_name, features, dict(best.params), best.value)
    except (SearchError, sqlite3.Error) as exc:  # a finished search is worth more than its warm-start record
        warnings.warn(f"study {study.study_name!r} was not recorded in the knowledge base: {exc}", stacklevel=2)
