"""``search-worker``: one process's share of a study -- join it, pull trials, run them, until it has them all.

``search-learners`` with ``workers > 0`` creates (or resumes) the study and its MLflow parent run, then
submits that many runs of the ``search-worker/scaleout`` deployment to the stack's work pool
(:mod:`metaauto.stack`). Each run, on whichever Prefect worker picks it up, on any machine, loops:

1. under a PostgreSQL advisory lock on the study (so two workers never both take the last trial), fail the
   trials whose heartbeat stopped (their worker died; :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`
   queues them again once) and count the trials the study has *claimed*: finished ones -- a failed trial
   that was re-queued does not count -- and running ones; if fewer than ``trials``, ask for one;
2. run it as the ``trial`` task of ``flows/search.py`` (the library's Objective, a nested MLflow run under
   the parent, a slot of the GPU global concurrency limit on CUDA) while a heartbeat thread keeps it
   alive in the storage, and tell the study how it ended;
3. when nothing is left to ask but other workers' trials still run, wait: if one of them dies, its retry
   is queued here and this worker runs it.

So every trial runs exactly once (a dead worker's trial once more, under a new number), the study ends
with exactly ``trials`` claimed trials, and adding a worker adds a trial at a time.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from prefect import flow, get_run_logger

from flows.params import CollectionParams, SearchParams
from flows.search import _objective, run_trial, setup, storage_url

WORKER_ATTR = "metaauto.worker"


def claimed(trials: list[FrozenTrial]) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """``(finished, running)`` as the trial budget counts them: a failed trial whose retry is queued is not finished."""
    with warnings.catch_warnings():  # retried_trial_number is marked experimental; the test suite pins Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials} - {None}
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                or (t.state == TrialState.FAIL and t.number not in retried)]
    running = [t for t in trials if t.state == TrialState.RUNNING]
    return finished, running


@contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """A PostgreSQL session advisory lock keyed on the study name; no lock on other storages (one machine, races tolerated)."""
    if not url.startswith(("postgresql", "postgres")):
        yield
        return
    import sqlalchemy

    from metaauto.search.storage import _with_driver

    engine = _lock_engines.get(url)
    if engine is None:
        engine = _lock_engines[url] = sqlalchemy.create_engine(_with_driver(url), poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": f"metaauto-study:{study_name}"})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": f"metaauto-study:{study_name}"})
            connection.commit()


_lock_engines: dict[str, Any] = {}


def next_trial(study: optuna.Study, url: str, trials: int) -> tuple[optuna.Trial | None, int]:
    """``(trial to run or None, trials still running elsewhere)`` -- the locked step 1 of the module docstring."""
    from optuna.storages._heartbeat import fail_stale_trials

    with study_lock(url, study.study_name):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)
        finished, running = claimed(study.get_trials(deepcopy=False))
        if len(finished) + len(running) >= trials:
            return None, len(running)
        with warnings.catch_warnings():  # ask() warns that heartbeats are meant for optimize(): we run our own thread
            warnings.simplefilter("ignore")
            trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        return trial, len(running)


@flow(name="search-worker", log_prints=True, flow_run_name="{study_name}-worker")
def search_worker(study_name: str, parent_run_id: str | None = None, data: CollectionParams = CollectionParams(),
                  search: SearchParams = SearchParams(), experiment: str = "metaauto", index: int = 0) -> dict[str, Any]:
    """Join study ``study_name`` and run its trials until it has ``search.trials`` (see the module docstring).

    The sampler is seeded with ``search.seed + index``: worker runs of one search draw different
    configurations, and a single worker draws what ``metaauto search`` with the same seed draws.
    """
    from optuna.storages._heartbeat import get_heartbeat_thread

    from metaauto.search import make_pruner, open_storage
    from metaauto.search.space import SearchError
    from metaauto.search.storage import redact

    logger = get_run_logger()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = search.model_copy(update={"study_name": study_name, "workers": 0})
    parts = setup(data, search)
    url = storage_url(search, study_name)
    storage = open_storage(url, search.heartbeat_interval, search.grace_period)
    if study_name not in optuna.get_all_study_names(storage):
        raise SearchError(f"study {study_name!r} does not exist in {redact(url)}; search-learners creates it before "
                          f"submitting workers (is {'the storage' if search.storage else 'METAAUTO_SEARCH_STORAGE'} the same on both sides?)")
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=optuna.samplers.TPESampler(seed=search.seed + index),
                              pruner=make_pruner(search.pruner, parts["budget"]))
    objective = _objective(parts, parent_run_id, experiment)
    ran: list[dict[str, Any]] = []
    logger.info("worker %s:%d joined study %s (%s)", socket.gethostname(), os.getpid(), study_name, redact(url))
    while True:
        trial, elsewhere = next_trial(study, url, search.trials)
        if trial is None:
            if not elsewhere:
                break
            time.sleep(min(2.0, float(search.heartbeat_interval)))  # a running trial may die and come back as a retry
            continue
        with get_heartbeat_thread(trial._trial_id, study._storage):
            try:
                outcome = run_trial(number=trial.number, trial_id=trial._trial_id, url=url, study_name=study_name,
                                    data=data, search=search, parent_run_id=parent_run_id, experiment=experiment,
                                    objective=objective, trial=trial)
            except Exception as exc:  # the Objective already recorded why; the study goes on
                logger.warning("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
                study.tell(trial, state=TrialState.FAIL)
                ran.append({"number": trial.number, "state": "FAIL", "value": None})
                continue
        if outcome["state"] == "PRUNED":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, outcome["value"])
        ran.append({k: outcome[k] for k in ("number", "state", "value")})
        logger.info("trial %d %s %s value %s (%s)", trial.number, trial.params.get("algorithm"), outcome["state"],
                    outcome["value"], outcome["reason"])
    return {"study": study_name, "worker": f"{socket.gethostname()}:{os.getpid()}", "trials": ran}


def dispatch(study: optuna.Study, url: str, data: CollectionParams, search: SearchParams, parent_run_id: str,
             experiment: str, progress: Any = None, poll: float = 1.0) -> int:
    """What ``search-learners`` does with ``workers > 0``: submit the worker runs and wait until the study has its trials.

    Returns the number of finished trials. Raises when every worker run ended (failed, crashed, cancelled)
    and the study is still short of trials. Worker runs still RUNNING once the study is complete belong to
    workers that died (their trials were retried elsewhere): they are marked Crashed.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.artifacts import update_progress_artifact
    from prefect.states import Cancelled, Crashed

    from metaauto.search.space import SearchError
    from metaauto.search.storage import is_shared

    if not is_shared(url) or url.startswith("journal"):
        raise SearchError(f"workers > 0 needs a database storage every worker reaches (postgresql://...), not {url!r}; "
                          "set search.storage or METAAUTO_SEARCH_STORAGE (metaauto stack status prints it)")
    logger = get_run_logger()
    child = search.model_copy(update={"workers": 0})
    parameters = {"study_name": study.study_name, "parent_run_id": parent_run_id, "data": data.model_dump(mode="json"),
                  "search": child.model_dump(mode="json"), "experiment": experiment}
    runs = [run_deployment(search.worker_deployment, parameters={**parameters, "index": i}, timeout=0,
                           flow_run_name=f"{study.study_name}-worker-{i}") for i in range(search.workers)]
    logger.info("submitted %d runs of %s: %s", len(runs), search.worker_deployment, ", ".join(r.name for r in runs))
    last = -1
    with get_client(sync_client=True) as client:
        while True:
            finished, running = claimed(study.get_trials(deepcopy=False))
            if len(finished) != last and progress is not None:
                update_progress_artifact(progress, progress=100.0 * min(len(finished), search.trials) / search.trials)
                last = len(finished)
            states = [client.read_flow_run(r.id).state for r in runs]
            if len(finished) >= search.trials and not running:
                break
            if all(s is not None and s.is_final() for s in states):
                raise SearchError(f"every worker run ended ({', '.join(f'{r.name}: {s.name}' for r, s in zip(runs, states))}) "
                                  f"with {len(finished)} of {search.trials} trials finished")
            time.sleep(poll)
        deadline = time.monotonic() + 10  # live workers exit within a poll of the last trial
        while time.monotonic() < deadline:
            states = [client.read_flow_run(r.id).state for r in runs]
            if all(s is not None and s.is_final() for s in states):
                break
            time.sleep(poll)
        for run, state in zip(runs, states):
            if state is None or state.is_final():
                continue
            if state.is_running():
                logger.warning("worker run %s is still running after the study completed: its worker is gone", run.name)
                client.set_flow_run_state(run.id, Crashed(message="worker lost; its trials were retried by other workers"),
                                          force=True)
            else:  # never picked up (fewer worker slots than runs): nothing left for it to do
                client.set_flow_run_state(run.id, Cancelled(message="the study completed before this run started"), force=True)
    return len(finished)
