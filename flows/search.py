"""``search-learners``: the Optuna study, driven with ask-and-tell so that every trial is a Prefect task run.

The flow asks the study for up to ``parallelism`` trials, submits each as a task run (retried by Prefect
if it raises) on the configured task runner, and tells the study how each ended. The trial's work is the
library's :class:`metaauto.search.Objective` -- the same callable ``metaauto search`` hands to
``study.optimize`` -- so the flow holds no training logic. Finished trials live in the Optuna storage:
a retried or re-run flow resumes the study by name and only runs the trials still missing.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

import optuna
from optuna.trial import TrialState
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NONE
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from flows.common import artifact_key, load, run_link
from flows.params import CollectionParams, SearchParams

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def storage_url(search: SearchParams, study_name: str) -> str:
    """SQLite is not safe for parallel writers: several trials at once default to a journal file."""
    from metaauto.search import default_storage_url
    from metaauto.search.storage import search_dir

    if search.storage:
        return search.storage
    if os.environ.get("METAAUTO_SEARCH_STORAGE"):  # the stack's workers and `metaauto stack env` set it
        return os.environ["METAAUTO_SEARCH_STORAGE"]
    if search.parallelism > 1 or search.task_runner != "threads":
        return f"journal:{search_dir() / (study_name + '.journal')}"
    return default_storage_url()


def setup(data: CollectionParams, search: SearchParams, collection: Any | None = None) -> dict[str, Any]:
    """The library objects a search needs, built from plain parameters (also inside a worker process)."""
    from metaauto.search import Budget, EpisodeSettings, SearchSpace
    from metaauto.search.study import default_study_name

    collection = collection if collection is not None else load(data)
    classification = collection.task_type == "classification"
    backbone = search.backbone or ("conv4" if len(collection.input_shape) == 3 else "mlp")
    episodes = EpisodeSettings(ways=data.ways if classification else None, shots=data.shots, queries=data.queries,
                               backbone=backbone, seed=search.seed, device=search.device)
    space = SearchSpace(collection.task_type, backbone, list(search.algorithms) if search.algorithms else None, None)
    budget = Budget(max_steps=search.max_steps, seconds=search.trial_seconds, val_every=min(search.val_every, search.max_steps),
                    val_tasks=search.val_tasks)
    name = search.study_name or default_study_name(collection, episodes.ways, data.shots)
    return {"collection": collection, "episodes": episodes, "space": space, "budget": budget, "study_name": name}


def _objective(parts: dict[str, Any], parent_run_id: str | None, experiment: str) -> Any:
    from metaauto.search import Objective
    from metaauto.search.tracking import TrialTracker
    from metaauto.tracking.store import get_client

    tracker = TrialTracker(get_client(), parent_run_id, parts["study_name"], experiment) if parent_run_id else None
    return Objective(parts["space"], parts["collection"], parts["episodes"], parts["budget"], tracker=tracker)


def task_runner(search: SearchParams) -> Any:
    """Where trials run: threads share one objective; processes and Dask workers rebuild it from the parameters.

    ``dask`` starts a local cluster of ``parallelism`` single-threaded worker processes, or joins the
    scheduler at ``dask_address`` (``tcp://host:8786``) so that trials run on other machines' workers.
    """
    if search.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=search.parallelism)
    if search.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=search.parallelism)
    from prefect_dask import DaskTaskRunner

    if search.dask_address:
        return DaskTaskRunner(address=search.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": search.parallelism, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def _gpu_limit(search: SearchParams) -> str | None:
    if search.gpu_concurrency_limit:
        return search.gpu_concurrency_limit
    if search.device.startswith("cuda"):
        return "gpu"
    if search.device == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else None
    return None


@task(name="trial", task_run_name="trial-{number}", cache_policy=NONE)
def run_trial(number: int, trial_id: int, url: str, study_name: str, data: CollectionParams, search: SearchParams,
              parent_run_id: str | None, experiment: str, objective: Any = None, trial: Any = None) -> dict[str, Any]:
    """One trial: the library's Objective on the study's asked trial. Pruning is an outcome, not a failure."""
    from metaauto.search import make_pruner, open_storage

    if objective is None:  # a worker process: rebuild what the thread pool shares
        objective = _objective(setup(data, search), parent_run_id, experiment)
    if trial is None:  # a worker process: the asked trial, through its own connection to the storage
        study = optuna.load_study(study_name=study_name, storage=open_storage(url),
                                  pruner=make_pruner(search.pruner, objective.budget))
        trial = optuna.Trial(study, trial_id)
    limit = _gpu_limit(search)
    if limit:
        from prefect.concurrency.sync import concurrency

        guard: Any = concurrency(limit, occupy=1)
    else:
        guard = nullcontext()
    with guard:
        try:
            value = objective(trial)
        except optuna.TrialPruned as exc:
            return {"number": number, "state": "PRUNED", "value": None, "reason": str(exc)}
    return {"number": number, "state": "COMPLETE", "value": value, "reason": trial.user_attrs.get("stop_reason")}


def _open_or_resume(url: str, parts: dict[str, Any], search: SearchParams) -> tuple[optuna.Study, bool]:
    from metaauto.search import make_pruner, open_storage
    from metaauto.search.space import SearchError
    from metaauto.search.study import _requeue_interrupted

    storage = open_storage(url)
    name, collection = parts["study_name"], parts["collection"]
    sampler = optuna.samplers.TPESampler(seed=search.seed)
    pruner = make_pruner(search.pruner, parts["budget"])
    if name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        if study.user_attrs.get("collection.fingerprint") not in (None, collection.fingerprint):
            raise SearchError(f"study {name!r} searched collection {study.user_attrs['collection.fingerprint']}, "
                              f"not {collection.name} ({collection.fingerprint}); name another study")
        if not search.workers:
            # this flow ran every trial itself, so a RUNNING one was left by a killed run of it: run its
            # parameters again. With workers, RUNNING trials may be alive elsewhere: heartbeats decide.
            _requeue_interrupted(study)
        return study, False
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize")
    from metaauto.search.study import seed_study

    # the library's start: fingerprint, published defaults, then the nearest past studies' best (warm start)
    seed_study(study, collection, parts["space"], parts["episodes"].ways, parts["episodes"].shots,
               warm_start=search.warm_start)
    return study, True


def _parent_run(study: optuna.Study, parts: dict[str, Any], search: SearchParams, url: str, experiment: str) -> Any:
    from metaauto.search.storage import redact
    from metaauto.search.tracking import PARENT_ATTR
    from metaauto.tracking.run import TrackedRun
    from metaauto.tracking.store import get_client

    client = get_client()
    parent_id = study.user_attrs.get(PARENT_ATTR)
    if parent_id is not None:
        client.update_run(parent_id, status="RUNNING")
        return TrackedRun(client, parent_id)
    name, space, budget = parts["study_name"], parts["space"], parts["budget"]
    parent = TrackedRun.start(run_name=f"search-{name}", experiment=experiment, client=client,
                              tags={"optuna.study": name, "metaauto.kind": "search", "collection": parts["collection"].name,
                                    "orchestrator": "prefect"})
    study.set_user_attr(PARENT_ATTR, parent.run_id)
    parent.log_params({"search.algorithms": space.algorithms, "search.pruner": search.pruner, "search.storage": redact(url),
                       "search.max_steps": budget.max_steps, "search.trial_seconds": budget.seconds,
                       "search.parallelism": search.parallelism, **{f"space.{k}": v for k, v in space.describe().items()}})
    return parent


def _leaderboard_rows(study: optuna.Study, client: Any) -> list[dict[str, Any]]:
    from metaauto.search.tracking import leaderboard, leaderboard_records

    rows = []
    for r in leaderboard_records(leaderboard(study)):
        rows.append({"trial": r.get("trial"), "state": r.get("state"), "value": r.get("value"), "algorithm": r.get("algorithm"),
                     "last_step": r.get("last_step"), "reason": r.get("reason"),
                     "mlflow_run": run_link(client, r.get("run_id")), "run_id": r.get("run_id")})
    return rows


@flow(name="search-learners", log_prints=True)
def search_learners(data: CollectionParams = CollectionParams(), search: SearchParams = SearchParams(),
                    experiment: str = "metaauto") -> dict[str, Any]:
    """Run (or resume) the Optuna study; each trial is a Prefect task run. Returns the study's summary."""
    from metaauto.search.study import remember_study
    from metaauto.search.tracking import log_study
    from metaauto.search.storage import redact
    from metaauto.tracking.store import get_client

    logger = get_run_logger()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parts = setup(data, search)
    name = parts["study_name"]
    url = storage_url(search, name)
    study, created = _open_or_resume(url, parts, search)
    parent = _parent_run(study, parts, search, url, experiment)
    client = parent.client
    shared = _objective(parts, parent.run_id, experiment) if search.task_runner == "threads" else None
    runner = task_runner(search)
    done = len(study.get_trials(deepcopy=False, states=_FINISHED))
    logger.info("study %s (%s): %d of %d trials already finished%s", name, redact(url), done, search.trials,
                "" if created else " (resumed)")
    progress = create_progress_artifact(progress=100.0 * min(done, search.trials) / search.trials,
                                        key=artifact_key("search-progress", name),
                                        description=f"Finished trials of study {name}")
    try:
        if search.workers:  # the trials run in search-worker flow runs on the work pool (flows/worker.py)
            from flows.worker import dispatch

            done = dispatch(study, url, data, search, parent.run_id, experiment, progress)
        with runner:
            while done < search.trials:
                asked = [study.ask() for _ in range(min(search.parallelism, search.trials - done))]
                futures = [(trial, runner.submit(run_trial, parameters=dict(
                    number=trial.number, trial_id=trial._trial_id, url=url, study_name=name, data=data, search=search,
                    parent_run_id=parent.run_id, experiment=experiment, objective=shared,
                    trial=trial if shared is not None else None))) for trial in asked]
                for trial, future in futures:
                    try:
                        outcome = future.result()
                    except Exception as exc:  # retries exhausted: the trial failed, the study goes on
                        logger.warning("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
                        study.tell(trial, state=TrialState.FAIL)
                        continue
                    if outcome["state"] == "PRUNED":
                        study.tell(trial, state=TrialState.PRUNED)
                    else:
                        study.tell(trial, outcome["value"])
                    logger.info("trial %d %s %s value %s (%s)", trial.number, trial.params.get("algorithm"),
                                outcome["state"], outcome["value"], outcome["reason"])
                done = len(study.get_trials(deepcopy=False, states=_FINISHED))
                update_progress_artifact(progress, progress=100.0 * min(done, search.trials) / search.trials)
        log_study(parent, study)
        remember_study(study, parts["collection"], parts["episodes"].ways, parts["episodes"].shots)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = study.best_trial if complete else None
        if best is not None:
            parent.set_tags({"optuna.best_trial": best.number, "optuna.best_algorithm": best.params["algorithm"]})
            parent.log_metrics({"search/best_value": best.value})
    except BaseException as exc:
        parent.fail(exc)
        raise
    parent.end("FINISHED")
    rows = _leaderboard_rows(study, client)
    create_table_artifact(table=[{k: v for k, v in r.items() if k != "run_id"} for r in rows],
                          key=artifact_key("leaderboard", name), description=f"Trials of study {name}, best first")
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return {"study": name, "storage": url, "storage_redacted": redact(url), "parent_run_id": parent.run_id, "states": states,
            "best_trial": best.number if best else None, "best_value": best.value if best else None,
            "best_params": dict(best.params) if best else {}, "leaderboard": rows}
