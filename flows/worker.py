"""``search-worker``: one worker's share of a study -- join it, pull trials, run them, until it has them all.

``search-learners`` with ``workers > 0`` creates (or resumes) the study and its MLflow parent run, then
submits that many worker runs (:func:`dispatch`), of one of two kinds (``search.dispatch``):

* ``task-workers`` (default): background runs of the ``search-worker`` *task*, taken by long-lived Prefect
  task workers (``python -m flows.task_worker``, started by ``metaauto stack up``) that imported PyTorch,
  MLflow and the data once -- no start-up per search;
* ``deployment``: flow runs of the ``search-worker/scaleout`` deployment on a work pool -- a new process
  (on Kubernetes, a pod with its own GPU) per run.

Either way the run, on any machine, follows the library's trial-claiming protocol
(:func:`metaauto.search.distributed.work`: claim a trial under a lock on the study, run it as the ``trial``
task while a heartbeat keeps it alive, tell the study, until the study has ``trials``; a dead worker's
trial is retried once by another). If every worker dies, the dispatcher notices that no trial has run for
``search.stall_seconds`` and fails the search.
"""

from __future__ import annotations

import time
from typing import Any

import optuna
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from flows.common import load
from flows.params import CollectionParams, SearchParams
from flows.trials import join_session, log_outcome, run_trial
from metaauto.platform.workers import TASK_STORAGE_BLOCK, task_workers
from metaauto.search.distributed import WORKER_ATTR  # noqa: F401  (the trials' worker attribute, for readers of this module)




def work_on_study(study_name: str, parent_run_id: str | None, data: CollectionParams, search: SearchParams,
                  experiment: str, index: int) -> dict[str, Any]:
    """The library's worker loop in whatever runs it: a ``search-worker`` flow run or task run.

    The sampler is seeded with ``search.seed + index``: worker runs of one search draw different
    configurations, and a single worker draws what ``metaauto search`` with the same seed draws.
    """
    from metaauto.search.distributed import work, worker_name
    from metaauto.urls import redact

    logger = get_run_logger()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = search.model_copy(update={"study_name": study_name, "workers": 0})
    where = "the storage" if search.storage else "METAAUTO_SEARCH_STORAGE"
    session = join_session(data, search, experiment, collection=cached_collection(data), sampler_seed=search.seed + index,
                           track=parent_run_id is not None,
                           missing=f"search-learners creates it before submitting workers (is {where} the same on both sides?)")
    session.attach_parent_run(parent_run_id)
    objective = session.objective()
    logger.info("worker %s joined study %s (%s)", worker_name(), study_name, redact(session.url))

    def run(trial: optuna.Trial) -> Any:
        return run_trial(number=trial.number, url=session.url, data=data, search=search, parent_run_id=parent_run_id,
                         experiment=experiment, objective=objective, trial=trial)

    ran = work(session, run, wait=min(2.0, float(search.heartbeat_interval)),
               on_outcome=lambda trial, outcome: log_outcome(logger, trial, outcome))
    return {"study": study_name, "worker": worker_name(), "trials": [o.to_dict() for o in ran]}


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

    def describe(self, states: list[Any]) -> str:
        return ", ".join(f"{n}: {s.name if s else None}" for n, s in zip(self.names(), states))

    def set_state(self, run: Any, state: Any) -> None:
        setter = self.client.set_flow_run_state if self.kind == "deployment" else self.client.set_task_run_state
        setter(run.id, state, force=True)


def _submit(study_name: str, data: CollectionParams, search: SearchParams, parent_run_id: str | None, experiment: str,
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


def dispatch(session: Any, data: CollectionParams, search: SearchParams, experiment: str, progress: Any = None,
             poll: float = 0.2, slow_poll: float = 2.0) -> int:
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
    from prefect.client.orchestration import get_client

    from metaauto.search.distributed import supports_workers
    from metaauto.search.space import SearchError
    from metaauto.search.tracking import warm_up_plots

    if not supports_workers(session.url):
        raise SearchError(f"workers > 0 needs a database storage every worker reaches (postgresql://...), not {session.url!r}; "
                          "set search.storage or METAAUTO_SEARCH_STORAGE (metaauto stack status prints it)")
    logger = get_run_logger()
    warm_up_plots()  # this process only waits from here on: the study's plots at the end need these imports
    with get_client(sync_client=True) as client:
        runs = _submit(session.problem.study_name, data, search, session.parent.run_id if session.parent else None,
                       experiment, client)
        logger.info("submitted %d %s runs: %s", len(runs.runs),
                    search.worker_deployment if runs.kind == "deployment" else "search-worker task", ", ".join(runs.names()))
        finished = _wait_for_trials(session, runs, search, progress, poll, slow_poll)
        _end_stragglers(runs, poll, logger)
    return finished


def _wait_for_trials(session: Any, runs: _Runs, search: SearchParams, progress: Any, poll: float, slow_poll: float) -> int:
    """Until the study has its trials: publish progress, and every ``slow_poll`` fail dead trials and check that
    some worker is still at work (see :func:`dispatch`)."""
    from prefect.artifacts import update_progress_artifact

    from metaauto.search.distributed import StallClock, progress as study_progress, reap
    from metaauto.search.space import SearchError

    name, clock, last, checked = session.problem.study_name, StallClock(), -1, 0.0
    while not (now := study_progress(session.study)).complete(search.trials):
        if now.finished != last and progress is not None:
            update_progress_artifact(progress, progress=100.0 * min(now.finished, search.trials) / search.trials)
            last = now.finished
        if time.monotonic() - checked >= slow_poll:  # the end is noticed within `poll`; the rest every `slow_poll`
            checked = time.monotonic()
            reap(session.study, session.url)
            states = runs.states()
            if all(s is not None and s.is_final() for s in states):
                raise SearchError(f"every worker run ended ({runs.describe(states)}) with {now.finished} of "
                                  f"{search.trials} trials finished")
            if clock.idle(now) > search.stall_seconds:
                raise SearchError(f"no trial of study {name} ran for {search.stall_seconds}s with {now.finished} of "
                                  f"{search.trials} finished: no worker is taking them ({runs.describe(states)}); "
                                  "check `metaauto stack status` and the workers' logs")
        time.sleep(poll)
    if progress is not None:
        update_progress_artifact(progress, progress=100.0 * min(now.finished, search.trials) / search.trials)
    return now.finished


def _end_stragglers(runs: _Runs, poll: float, logger: Any) -> None:
    """Live workers exit within a poll of the last trial; a run still RUNNING lost its worker, one never started is moot."""
    from prefect.states import Cancelled, Crashed

    deadline = time.monotonic() + 10
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
