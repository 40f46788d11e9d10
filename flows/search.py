"""``search-learners``: the Optuna study, driven with ask-and-tell so that every trial is a Prefect task run.

The flow starts (or resumes) the library's :class:`metaauto.search.SearchSession`, asks the study for up to
``parallelism`` trials, submits each as a ``trial`` task run on the configured task runner, and tells the
study how each ended; with ``workers > 0`` the trials run in worker runs instead (:mod:`flows.worker`).
The trial's work is the library's :class:`metaauto.search.Objective` -- the same callable ``metaauto
search`` hands to ``study.optimize`` -- so the flow holds no training logic. Finished trials live in the
Optuna storage: a retried or re-run flow resumes the study by name and only runs the trials still missing.
"""

from __future__ import annotations

from typing import Any

import optuna
from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from flows.common import artifact_key, run_link
from flows.params import CollectionParams, SearchParams
from flows.trials import log_outcome, run_trial, start_session, storage_url
from flows.worker import dispatch

__all__ = ["search_learners", "storage_url", "task_runner"]


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


def run_trials(session: Any, data: CollectionParams, search: SearchParams, experiment: str, progress: Any) -> None:
    """Ask, run as ``trial`` task runs ``parallelism`` at a time, and tell, until the study has its trials."""
    from metaauto.search import TrialOutcome

    logger = get_run_logger()
    parent_run_id = session.parent.run_id if session.parent else None
    shared = session.objective() if search.task_runner == "threads" else None
    done = session.finished()
    if done >= search.trials:
        return
    with task_runner(search) as runner:
        while done < search.trials:
            asked = [session.ask() for _ in range(min(search.parallelism, search.trials - done))]
            futures = [(trial, runner.submit(run_trial, parameters=dict(
                number=trial.number, url=session.url, data=data, search=search, parent_run_id=parent_run_id,
                experiment=experiment, objective=shared, trial=trial if shared is not None else None))) for trial in asked]
            for trial, future in futures:
                try:
                    outcome = future.result()
                except Exception as exc:  # the trial failed (its reason is recorded); the study goes on
                    outcome = TrialOutcome.failed(trial.number, exc)
                session.tell(trial, outcome)
                log_outcome(logger, trial, outcome)
            done = session.finished()
            update_progress_artifact(progress, progress=100.0 * min(done, search.trials) / search.trials)


def publish_leaderboard(result: Any, client: Any) -> None:
    rows = [{"trial": r.get("trial"), "state": r.get("state"), "value": r.get("value"), "algorithm": r.get("algorithm"),
             "last_step": r.get("last_step"), "reason": r.get("reason"), "mlflow_run": run_link(client, r.get("run_id"))}
            for r in result.leaderboard]
    create_table_artifact(table=rows, key=artifact_key("leaderboard", result.study_name),
                          description=f"Trials of study {result.study_name}, best first")


@flow(name="search-learners", log_prints=True)
def search_learners(data: CollectionParams = CollectionParams(), search: SearchParams = SearchParams(),
                    experiment: str = "metaauto") -> Any:
    """Run (or resume) the Optuna study; each trial is a Prefect task run. Returns the study's
    :class:`~metaauto.search.SearchResult`."""
    from metaauto.urls import redact

    logger = get_run_logger()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    session = start_session(data, search, experiment)
    session.start_parent_run(tags={"orchestrator": "prefect"}, params={"search.parallelism": search.parallelism})
    name, done = session.problem.study_name, session.finished()
    logger.info("study %s (%s): %d of %d trials already finished%s", name, redact(session.url), done, search.trials,
                "" if session.created else " (resumed)")
    progress = create_progress_artifact(progress=100.0 * min(done, search.trials) / search.trials,
                                        key=artifact_key("search-progress", name),
                                        description=f"Finished trials of study {name}")
    with session.parent_running():
        if search.workers:  # the trials run in search-worker runs (flows/worker.py)
            dispatch(session, data, search, experiment, progress)
        run_trials(session, data, search, experiment, progress)
        result = session.conclude()
    publish_leaderboard(result, session.client)
    return result
