"""A whole search: open or resume the study, enqueue the published defaults, optimise, report, promote.

The published configuration of every allowed algorithm is enqueued before anything is sampled, so the
first trials are exactly what a user would otherwise hand-tune from, and the best trial can only match
or beat them. When the study ends, the best configuration is meta-trained again with the full step
budget (training is deterministic given the seed, so this reproduces the trial's own weights when the
trial ran its full budget) by :func:`metaauto.tracking.train_tracked`, which evaluates it on the
meta-test split with the baselines, logs the model, and registers and promotes it by the registry's
rules. That run is nested under the study's parent run like the trials.

A new study also enqueues, after the defaults, the best configurations of the most similar past
studies (:mod:`metaauto.search.knowledge`), and every finished study is recorded for later ones.
"""

from __future__ import annotations

import sqlite3
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import optuna
from mlflow import MlflowClient
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from metaauto.search.knowledge import DEFAULT_K, WARM_ATTR, KnowledgeBase, meta_features, warm_start_configs
from metaauto.search.objective import Budget, EpisodeSettings, Objective, REASON, build, train_config
from metaauto.search.space import SearchError, SearchSpace
from metaauto.search.storage import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, default_storage_url, is_shared, open_storage, redact
from metaauto.search.tracking import PARENT_ATTR, PARENT_TAG, TrialTracker, leaderboard, leaderboard_records, log_study
from metaauto.tracking.run import TrackedRun
from metaauto.tracking.store import DEFAULT_EXPERIMENT, get_client

PRUNERS = ("hyperband", "median", "successive_halving", "none")
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


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


def default_study_name(collection: Any, ways: int | None, shots: int) -> str:
    shape = f"{ways}w{shots}s" if collection.task_type == "classification" else f"{shots}shot"
    return f"{collection.name}-{shape}"


@dataclass
class SearchResult:
    """What :func:`run_search` did; ``final`` is the tracked training of the best configuration."""

    study_name: str
    storage: str
    parent_run_id: str | None
    states: dict[str, int]
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    leaderboard: list[dict[str, Any]]
    plots_skipped: dict[str, str] = field(default_factory=dict)
    final: Any = None

    def summary(self) -> dict[str, Any]:
        final = None
        if self.final is not None:
            from metaauto.tracking.cli import tracking_summary

            final = tracking_summary(self.final)
        return {
            "study": self.study_name, "storage": self.storage, "parent_run_id": self.parent_run_id,
            "states": self.states, "best_trial": self.best_trial, "best_value": self.best_value,
            "best_params": self.best_params, "leaderboard": self.leaderboard, "plots_skipped": self.plots_skipped,
            "final": final,
        }


def _open_study(storage: Any, name: str, sampler: Any, pruner: Any, *, resume: bool, worker: bool) -> tuple[optuna.Study, bool]:
    """``(study, created)``."""
    exists = name in optuna.get_all_study_names(storage)
    if worker or (resume and exists):
        if not exists:
            raise SearchError(f"study {name!r} does not exist in this storage; start it with `metaauto search` (no --worker) first")
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner), False
    if exists:
        raise SearchError(f"study {name!r} already exists; pass --resume to continue it, or --study to name a new one")
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize"), True


def _requeue_interrupted(study: optuna.Study) -> int:
    """Fail the trials a crashed single-process search left RUNNING and queue their parameters again."""
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, REASON, "interrupted: the search process stopped")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        # a trial taken from the queue holds its enqueued values until it suggests them
        params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        study.enqueue_trial(params, user_attrs={"retried_from": trial.number})
        count += 1
    return count


def seed_study(study: optuna.Study, collection: Any, space: SearchSpace, ways: int | None, shots: int, *,
               warm_start: bool = True, knowledge: KnowledgeBase | str | None = None, warm_k: int = DEFAULT_K) -> None:
    """What a new study starts with: the collection's fingerprint and meta-features, the published defaults
    of every allowed algorithm, then (``warm_start``) the best configurations of the nearest past studies.

    Shared by :func:`run_search` and the ``search-learners`` flow, so both start a study the same way.
    """
    study.set_user_attr("collection.fingerprint", collection.fingerprint)
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


def run_search(
    collection: Any,
    *,
    ways: int | None = 5,
    shots: int = 1,
    queries: int = 15,
    trials: int = 20,
    timeout: float | None = None,
    algorithms: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    budget: Budget | None = None,
    pruner: str = "hyperband",
    storage: str | None = None,
    study_name: str | None = None,
    resume: bool = False,
    worker: bool = False,
    backbone: str | None = None,
    seed: int = 0,
    device: str = "auto",
    track: bool = True,
    evaluation: Any = None,
    register_as: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    client: MlflowClient | None = None,
    callbacks: Iterable[Any] = (),
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    grace_period: int = GRACE_PERIOD_S,
    warm_start: bool = True,
    knowledge: KnowledgeBase | str | None = None,
    warm_k: int = DEFAULT_K,
) -> SearchResult:
    """Search learners and hyperparameters for ``collection`` (see the module docstring).

    ``trials`` caps the study's finished trials in total (across workers and resumptions); ``timeout``
    bounds this process's optimisation in seconds. A ``worker`` joins an existing study and only runs
    trials; the process that created the study (or resumes it) reports, evaluates and registers.
    ``heartbeat_interval`` and ``grace_period`` (seconds) apply to database storages other than SQLite:
    a trial silent for ``grace_period`` is failed and retried once by the next process that asks for one.
    With ``warm_start``, a new study also enqueues (after the defaults) the best configurations of the
    ``warm_k`` past studies nearest by meta-features in ``knowledge`` (a :class:`KnowledgeBase` or its path;
    default ``$METAAUTO_HOME/search/knowledge.db``); every finished study is recorded there either way.
    """
    budget = budget or Budget()
    backbone = backbone or ("conv4" if len(collection.input_shape) == 3 else "mlp")
    classification = collection.task_type == "classification"
    episodes = EpisodeSettings(ways=ways if classification else None, shots=shots, queries=queries, backbone=backbone,
                               seed=seed, device=device)
    space = SearchSpace(collection.task_type, backbone, algorithms, overrides)
    if register_as and not track:
        raise SearchError("registering the best configuration needs tracking")
    name = study_name or default_study_name(collection, episodes.ways, shots)
    url = storage or default_storage_url()
    study, created = _open_study(open_storage(url, heartbeat_interval, grace_period), name, optuna.samplers.TPESampler(seed=None if worker else seed),
                                 make_pruner(pruner, budget), resume=resume, worker=worker)
    if created:
        seed_study(study, collection, space, episodes.ways, shots, warm_start=warm_start, knowledge=knowledge, warm_k=warm_k)
    elif study.user_attrs.get("collection.fingerprint") not in (None, collection.fingerprint):
        raise SearchError(f"study {name!r} searched collection {study.user_attrs['collection.fingerprint']}, "
                          f"not {collection.name} ({collection.fingerprint})")
    if resume and not worker and not is_shared(url):
        _requeue_interrupted(study)

    client = client or (get_client() if track else None)
    parent = None
    if track:
        parent_id = study.user_attrs.get(PARENT_ATTR)
        if parent_id is None:
            if worker:
                raise SearchError(f"study {name!r} has no MLflow parent run to attach trials to")
            parent = TrackedRun.start(run_name=f"search-{name}", experiment=experiment, client=client,
                                      tags={"optuna.study": name, "metaauto.kind": "search", "collection": collection.name})
            study.set_user_attr(PARENT_ATTR, parent.run_id)
            parent.log_params({"search.algorithms": space.algorithms, "search.pruner": pruner, "search.storage": redact(url),
                               "search.max_steps": budget.max_steps, "search.trial_seconds": budget.seconds,
                               **{f"space.{k}": v for k, v in space.describe().items()}})
        else:
            parent = TrackedRun(client, parent_id)
            if not worker:
                client.update_run(parent_id, status="RUNNING")
    tracker = TrialTracker(client, parent.run_id, name, experiment) if parent is not None else None
    objective = Objective(space, collection, episodes, budget, tracker=tracker, callbacks=callbacks)
    study_callbacks: list[Any] = [MaxTrialsCallback(trials, states=_FINISHED)]
    if on_trial is not None:
        study_callbacks.append(on_trial)

    try:
        already = len(study.get_trials(deepcopy=False, states=_FINISHED))
        if already < trials:
            study.optimize(objective, n_trials=trials - already if not worker else trials, timeout=timeout,
                           catch=(Exception,), callbacks=study_callbacks, gc_after_trial=True)
        result = _summarise(study, name, url, parent)
        if not worker and result.best_trial is not None:
            remember_study(study, collection, episodes.ways, shots, knowledge)
        if worker or parent is None:
            return result
        result.plots_skipped = log_study(parent, study)
        if result.best_trial is not None:
            best = study.best_trial
            parent.set_tags({"optuna.best_trial": best.number, "optuna.best_algorithm": best.params["algorithm"]})
            parent.log_metrics({"search/best_value": best.value, **{f"search/n_{k.lower()}": v for k, v in result.states.items()}})
            result.final = _train_best(space, collection, episodes, budget, best, parent, name, evaluation, register_as,
                                       experiment, client)
            parent.set_tags({"best_run_id": result.final.run_id})
    except BaseException as exc:
        if parent is not None and not worker:
            parent.fail(exc)
        raise
    if parent is not None and not worker:
        parent.end("FINISHED")
    return result


def _summarise(study: optuna.Study, name: str, url: str, parent: TrackedRun | None) -> SearchResult:
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    return SearchResult(
        study_name=name, storage=redact(url),
        parent_run_id=parent.run_id if parent else None, states=states,
        best_trial=best.number if best else None, best_value=best.value if best else None,
        best_params=dict(best.params) if best else {}, leaderboard=leaderboard_records(leaderboard(study)),
    )


def _train_best(space: SearchSpace, collection: Any, episodes: EpisodeSettings, budget: Budget, best: FrozenTrial,
                parent: TrackedRun, name: str, evaluation: Any, register_as: str | None, experiment: str,
                client: MlflowClient) -> Any:
    from metaauto.tracking import EvalSettings, train_tracked

    candidate = space.candidate(best.params)
    learner = build(candidate, collection, episodes)
    config = train_config(candidate, collection, episodes, budget)
    return train_tracked(
        learner, collection, config, evaluation=evaluation or EvalSettings(seed=episodes.seed), register_as=register_as,
        experiment=experiment, client=client, name=f"{name}-best-trial{best.number}-{candidate.algorithm}",
        tags={PARENT_TAG: parent.run_id, "optuna.study": name, "optuna.trial": best.number, "optuna.best": "true"},
    )
