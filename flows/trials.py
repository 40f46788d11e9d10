"""What the flows that touch a study share: the library's search objects built from the form's parameters,
and the ``trial`` task.

Every flow opens the study through :func:`start_session` (``search-learners``) or :func:`join_session`
(the workers, the trials run in other processes, ``evaluate-and-promote``), so they all agree on its
storage, name, space and budget; the work is :class:`metaauto.search.SearchSession`'s.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from flows.common import load
from flows.params import CollectionParams, EvalParams, SearchParams


def storage_url(search: SearchParams, study_name: str) -> str:
    """The library's rule (:func:`metaauto.search.resolve_storage_url`); trials in several threads or processes
    at once make SQLite unsafe, so they default to a journal file."""
    from metaauto.search import resolve_storage_url

    parallel = search.parallelism > 1 or search.task_runner != "threads"
    return resolve_storage_url(search.storage, study_name=study_name, parallel=parallel)


def search_problem(data: CollectionParams, search: SearchParams, collection: Any | None = None) -> Any:
    """The library's :class:`~metaauto.search.SearchProblem` of these parameters (the collection loaded unless given)."""
    from metaauto.search import Budget, EpisodeSettings, SearchProblem

    collection = collection if collection is not None else load(data)
    episodes = EpisodeSettings.for_collection(collection, data.ways, data.shots, data.queries, backbone=search.backbone,
                                              seed=search.seed, device=search.device)
    budget = Budget(max_steps=search.max_steps, seconds=search.trial_seconds, val_every=min(search.val_every, search.max_steps),
                    val_tasks=search.val_tasks)
    return SearchProblem.build(collection, episodes, budget=budget, study_name=search.study_name,
                               algorithms=list(search.algorithms) if search.algorithms else None)


def search_settings(search: SearchParams, study_name: str, url: str | None = None) -> Any:
    """:class:`~metaauto.search.SearchSettings` (on ``url``, default :func:`storage_url`): a flow resumes an
    existing study by name, and when this flow runs every trial itself (no workers) a trial left RUNNING
    was interrupted and runs again."""
    from metaauto.search import SearchSettings

    return SearchSettings(trials=search.trials, pruner=search.pruner, storage=url or storage_url(search, study_name), resume=True,
                          exclusive=not search.workers, warm_start=search.warm_start,
                          heartbeat_interval=search.heartbeat_interval, grace_period=search.grace_period)


def start_session(data: CollectionParams, search: SearchParams, experiment: str) -> Any:
    problem = search_problem(data, search)
    from metaauto.search import SearchSession

    return SearchSession.start(problem, search_settings(search, problem.study_name), experiment=experiment)


def join_session(data: CollectionParams, search: SearchParams, experiment: str, *, missing: str, url: str | None = None,
                 collection: Any | None = None, sampler_seed: int | None = None, track: bool = True) -> Any:
    problem = search_problem(data, search, collection)
    from metaauto.search import SearchSession

    return SearchSession.join(problem, search_settings(search, problem.study_name, url), missing=missing,
                              sampler_seed=sampler_seed, track=track, experiment=experiment)


def final_settings(search: SearchParams, evaluation: EvalParams) -> Any:
    """:class:`~metaauto.search.FinalSettings`: the final training is capped at ``final_seconds``, else at the
    trial budget's seconds."""
    from metaauto.search import FinalSettings
    from metaauto.tracking import EvalSettings

    return FinalSettings(
        steps=evaluation.final_steps,
        seconds=evaluation.final_seconds if evaluation.final_seconds is not None else search.trial_seconds,
        evaluation=EvalSettings(tasks=evaluation.tasks, seed=search.seed, baselines=evaluation.baselines,
                                pretrain_steps=evaluation.pretrain_steps, scratch_steps=evaluation.scratch_steps),
        register_as=evaluation.register_as or None, margin=evaluation.margin, alpha=evaluation.alpha, test=evaluation.test,
    )


def gpu_limit(search: SearchParams) -> str | None:
    """The Prefect global concurrency limit every trial occupies a slot of, if any."""
    if search.gpu_concurrency_limit:
        return search.gpu_concurrency_limit
    if search.device.startswith("cuda"):
        return "gpu"
    if search.device == "auto":
        import torch

        return "gpu" if torch.cuda.is_available() else None
    return None


@task(name="trial", task_run_name="trial-{number}", cache_policy=NONE)
def run_trial(number: int, url: str, data: CollectionParams, search: SearchParams, parent_run_id: str | None,
              experiment: str, objective: Any = None, trial: Any = None) -> Any:
    """One trial, the library's :meth:`~metaauto.search.Objective.run`: a :class:`~metaauto.search.TrialOutcome`
    (pruning is an outcome, not a failure; a failed trial raises). A thread shares the flow's ``objective``
    and ``trial``; another process (a process pool, a Dask worker) joins the study and re-opens trial ``number``."""
    if objective is None:
        session = join_session(data, search, experiment, missing="search-learners creates it before running trials",
                               url=url, track=parent_run_id is not None)
        session.attach_parent_run(parent_run_id)
        objective, trial = session.objective(), session.trial(number)
    limit = gpu_limit(search)
    if limit:
        from prefect.concurrency.sync import concurrency

        guard: Any = concurrency(limit, occupy=1)
    else:
        guard = nullcontext()
    with guard:
        return objective.run(trial)


def log_outcome(logger: Any, trial: Any, outcome: Any) -> None:
    if outcome.state.name == "FAIL":
        logger.warning("trial %d failed: %s", trial.number, outcome.reason)
    else:
        logger.info("trial %d %s %s value %s (%s)", trial.number, trial.params.get("algorithm"), outcome.state.name,
                    outcome.value, outcome.reason)
