"""``search-worker``: one worker's share of a study -- join it, pull trials, run them, until it has them all.

``search-learners`` with ``workers > 0`` creates (or resumes) the study and its MLflow parent run, then
submits that many worker runs (:func:`dispatch`), of one of two kinds (``search.dispatch``):

* ``task-workers`` (default): background runs of the ``search-worker`` *task*, taken by long-lived Prefect
  task workers (``python -m flows.task_worker``, started by ``metaauto stack up``) that imported PyTorch,
  MLflow and the data once -- no start-up per search;
* ``deployment``: flow runs of the ``search-worker/scaleout`` deployment on a work pool -- a new process
  (on Kubernetes, a pod with its own GPU) per run.

Either way the run, on any machine, loops:

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
with exactly ``trials`` claimed trials, and adding a worker adds a trial at a time. If every worker dies,
the dispatcher notices that no trial has run for ``search.stall_seconds`` and fails the search.
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
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows.params import CollectionParams, SearchParams
from flows.common import load
from flows.search import _objective, run_trial, setup, storage_url
from metaauto.platform.workers import TASK_STORAGE_BLOCK, task_workers

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


def fail_dead_trials(study: optuna.Study) -> None:
    """Fail (and, through the storage's callback, queue again once) the trials whose heartbeat went stale.
    Callers hold :func:`study_lock`: two processes must not both retry one dead trial."""
    from optuna.storages._heartbeat import fail_stale_trials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)


def next_trial(study: optuna.Study, url: str, trials: int) -> tuple[optuna.Trial | None, int]:
    """``(trial to run or None, trials still running elsewhere)`` -- the locked step 1 of the module docstring."""
    with study_lock(url, study.study_name):
        fail_dead_trials(study)
        finished, running = claimed(study.get_trials(deepcopy=False))
        if len(finished) + len(running) >= trials:
            return None, len(running)
        with warnings.catch_warnings():  # ask() warns that heartbeats are meant for optimize(): we run our own thread
            warnings.simplefilter("ignore")
            trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        return trial, len(running)


def work_on_study(study_name: str, parent_run_id: str | None, data: CollectionParams, search: SearchParams,
                  experiment: str, index: int) -> dict[str, Any]:
    """The loop of the module docstring, in whatever runs it: a ``search-worker`` flow run or task run.

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
    parts = setup(data, search, cached_collection(data))
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


_collections: dict[str, Any] = {}


def cached_collection(data: CollectionParams) -> Any:
    """A long-lived task worker loads a collection once, not once per search (Omniglot takes seconds)."""
    key = data.model_dump_json(include={"collection", "data_dir", "options"})
    if key not in _collections:
        _collections.clear()  # one collection at a time: a worker serving many searches must not grow without bound
        _collections[key] = load(data)
    return _collections[key]


@flow(name="search-worker", log_prints=True, flow_run_name="{study_name}-worker")
def search_worker(study_name: str, parent_run_id: str | None = None, data: CollectionParams = CollectionParams(),
                  search: SearchParams = SearchParams(), experiment: str = "metaauto", index: int = 0) -> dict[str, Any]:
    """Join study ``study_name`` and run its trials until it has ``search.trials`` (see the module docstring).

    The ``deployment`` way: each run is a new process on a work pool's worker (a pod with its own GPU on
    Kubernetes), which pays Python's and PyTorch's start-up for every search.
    """
    return work_on_study(study_name, parent_run_id, data, search, experiment, index)


@task(name="search-worker", task_run_name="{study_name}-worker-{index}", cache_policy=NONE, result_storage=TASK_STORAGE_BLOCK)
def search_worker_task(study_name: str, parent_run_id: str | None = None, data: CollectionParams = CollectionParams(),
                       search: SearchParams = SearchParams(), experiment: str = "metaauto", index: int = 0) -> dict[str, Any]:
    """The same, as a background task run on a long-lived task worker (``python -m flows.task_worker``).

    The ``task-workers`` way: the worker process imported PyTorch, MLflow and the collection once, so
    a search's first trial starts within a second of being submitted.
    """
    return work_on_study(study_name, parent_run_id, data, search, experiment, index)


class _Runs:
    """The submitted worker runs, flow runs or task runs alike: their states, and how to end the stragglers."""

    def __init__(self, client: Any, kind: str, runs: list[Any]) -> None:
        self.client, self.kind, self.runs = client, kind, runs

    def names(self) -> list[str]:
        return [getattr(r, "name", None) or str(r.id) for r in self.runs]

    def states(self) -> list[Any]:
        read = self.client.read_flow_run if self.kind == "deployment" else self.client.read_task_run
        return [read(r.id).state for r in self.runs]

    def set_state(self, run: Any, state: Any) -> None:
        setter = self.client.set_flow_run_state if self.kind == "deployment" else self.client.set_task_run_state
        setter(run.id, state, force=True)


def _submit(study_name: str, data: CollectionParams, search: SearchParams, parent_run_id: str, experiment: str,
            client: Any) -> _Runs:
    from prefect.deployments import run_deployment

    from metaauto.search.space import SearchError

    child = search.model_copy(update={"workers": 0})
    if search.dispatch == "deployment":
        parameters = {"study_name": study_name, "parent_run_id": parent_run_id, "data": data.model_dump(mode="json"),
                      "search": child.model_dump(mode="json"), "experiment": experiment}
        runs = [run_deployment(search.worker_deployment, parameters={**parameters, "index": i}, timeout=0,
                               flow_run_name=f"{study_name}-worker-{i}") for i in range(search.workers)]
        return _Runs(client, "deployment", runs)
    serving = task_workers(client)
    if not serving:
        raise SearchError("no task worker serves the search-worker task: start them with `metaauto stack up` (or "
                          "`metaauto stack add-workers`, or `metaauto stack worker` on another machine), or set "
                          "search.dispatch = 'deployment' to run the worker deployment on a work pool")
    try:
        futures = [search_worker_task.delay(study_name=study_name, parent_run_id=parent_run_id, data=data, search=child,
                                            experiment=experiment, index=i) for i in range(search.workers)]
    except ValueError as exc:  # the parameter block is missing: not the stack's Prefect server
        raise SearchError(f"cannot submit search-worker task runs: {exc}; the block {TASK_STORAGE_BLOCK!r} that "
                          "`metaauto stack up` creates on its Prefect server holds their parameters") from exc
    return _Runs(client, "task-workers", [client.read_task_run(f.task_run_id) for f in futures])


def dispatch(study: optuna.Study, url: str, data: CollectionParams, search: SearchParams, parent_run_id: str,
             experiment: str, progress: Any = None, poll: float = 0.2, slow_poll: float = 2.0) -> int:
    """What ``search-learners`` does with ``workers > 0``: submit the worker runs and wait until the study has its trials.

    ``search.dispatch`` says what runs the loop: background task runs on long-lived task workers
    (``task-workers``, the default: no process start-up per search), or flow runs of
    ``search.worker_deployment`` on a work pool (``deployment``: a new process, or pod, per run).

    Returns the number of finished trials. Raises when every worker run ended (failed, crashed, cancelled)
    and the study is still short of trials, and when for ``search.stall_seconds`` no trial ran (no live
    heartbeat) and none finished: every worker is gone, or none ever picked a run up. Worker runs still
    RUNNING once the study is complete belong to workers that died (their trials were retried elsewhere):
    they are marked Crashed; runs never picked up are Cancelled.
    """
    from prefect.artifacts import update_progress_artifact
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Crashed

    from metaauto.search import open_storage
    from metaauto.search.space import SearchError
    from metaauto.search.storage import is_shared
    from metaauto.search.tracking import warm_up_plots

    if not is_shared(url) or url.startswith("journal"):
        raise SearchError(f"workers > 0 needs a database storage every worker reaches (postgresql://...), not {url!r}; "
                          "set search.storage or METAAUTO_SEARCH_STORAGE (metaauto stack status prints it)")
    logger = get_run_logger()
    # the workers' heartbeat settings: a trial whose worker died is failed (and queued again) here too
    watched = optuna.load_study(study_name=study.study_name,
                                storage=open_storage(url, search.heartbeat_interval, search.grace_period))
    last, last_progress, seen = -1, time.monotonic(), None
    warm_up_plots()  # this process only waits from here on: the study's plots at the end need these imports
    with get_client(sync_client=True) as client:
        runs = _submit(study.study_name, data, search, parent_run_id, experiment, client)
        logger.info("submitted %d %s runs: %s", len(runs.runs),
                    search.worker_deployment if runs.kind == "deployment" else "search-worker task", ", ".join(runs.names()))
        checked = 0.0
        while True:
            finished, running = claimed(study.get_trials(deepcopy=False))
            if len(finished) >= search.trials and not running:
                break
            if len(finished) != last and progress is not None:
                update_progress_artifact(progress, progress=100.0 * min(len(finished), search.trials) / search.trials)
                last = len(finished)
            if time.monotonic() - checked < slow_poll:  # the end is noticed within `poll`; the rest every `slow_poll`
                time.sleep(poll)
                continue
            checked = time.monotonic()
            with study_lock(url, study.study_name):
                fail_dead_trials(watched)
            states = runs.states()
            if all(s is not None and s.is_final() for s in states):
                raise SearchError(f"every worker run ended ({', '.join(f'{n}: {s.name}' for n, s in zip(runs.names(), states))}) "
                                  f"with {len(finished)} of {search.trials} trials finished")
            now = (len(finished), tuple(t.number for t in running))
            if running or now != seen:  # a live trial (its heartbeat is fresh, or it would have been failed above)
                seen, last_progress = now, time.monotonic()
            elif time.monotonic() - last_progress > search.stall_seconds:
                raise SearchError(f"no trial of study {study.study_name} ran for {search.stall_seconds}s with "
                                  f"{len(finished)} of {search.trials} finished: no worker is taking them "
                                  f"({', '.join(f'{n}: {s.name if s else None}' for n, s in zip(runs.names(), states))}); "
                                  "check `metaauto stack status` and the workers' logs")
            time.sleep(poll)
        if progress is not None:
            update_progress_artifact(progress, progress=100.0 * min(len(finished), search.trials) / search.trials)
        deadline = time.monotonic() + 10  # live workers exit within a poll of the last trial
        while time.monotonic() < deadline:
            states = runs.states()
            if all(s is not None and s.is_final() for s in states):
                break
            time.sleep(poll)
        for run, name, state in zip(runs.runs, runs.names(), states):
            if state is None or state.is_final():
                continue
            if state.is_running():
                logger.warning("worker run %s is still running after the study completed: its worker is gone", name)
                runs.set_state(run, Crashed(message="worker lost; its trials were retried by other workers"))
            else:  # never picked up (fewer worker slots than runs): nothing left for it to do
                runs.set_state(run, Cancelled(message="the study completed before this run started"))
    return len(finished)
