"""The scale-out stack on the running PostgreSQL: `metaauto stack up`, a search on two task workers,
the same on the work pool's deployment, a worker killed mid-trial, every worker killed, `metaauto stack down`.

One stack per module (servers and workers take most of the time), on free loopback ports and on fresh
databases ``metaauto_stack_<hex>_{mlflow,prefect,optuna}`` that are dropped afterwards. Everything is
real: MLflow and Prefect servers on PostgreSQL, two long-lived Prefect task workers
(``python -m flows.task_worker``) and one ``prefect worker`` of a process work pool, ``search-worker``
task runs and ``search-worker/scaleout`` flow runs, the Optuna study in PostgreSQL.
"""

from __future__ import annotations

import contextvars
import json
import os
import signal
import threading
import time
import uuid

import optuna
import prefect  # noqa: F401  -- Prefect's log handlers bind the session's stderr, never a CliRunner's
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from typer.testing import CliRunner

from metaauto.platform import stack
from metaauto.cli import app
from metaauto.platform.process import alive, free_port, port_free

POSTGRES = os.environ.get("METAAUTO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ALGORITHMS = ["fomaml", "reptile", "anil"]
runner = CliRunner()


@pytest.fixture(scope="module")
def up():
    try:
        stack.connect(POSTGRES).close()
    except stack.StackError as exc:  # the test database is part of the environment
        pytest.fail(str(exc))
    saved = {k: os.environ.get(k) for k in ("METAAUTO_SEARCH_STORAGE", "OMP_NUM_THREADS", "MLFLOW_TRACKING_URI")}
    os.environ.pop("METAAUTO_SEARCH_STORAGE", None)
    os.environ["OMP_NUM_THREADS"] = "1"  # the workers' trials: tiny models, a small shared machine
    prefix = f"metaauto_stack_{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    # the library call, not CliRunner: Prefect's log handlers would keep CliRunner's stderr, closed after the
    # invocation, and every later flow run's log line would fail (the CLI's up is `stack.up` plus printing)
    state = None
    try:
        state = stack.up(workers=2, postgres=POSTGRES, prefix=prefix, prefect_port=free_port(), mlflow_port=free_port())
        print(f"stack up: {time.monotonic() - started:.1f}s")
        from prefect.settings import PREFECT_API_URL, temporary_settings

        os.environ["MLFLOW_TRACKING_URI"] = state.mlflow_url
        with temporary_settings(updates={PREFECT_API_URL: state.prefect_api}):
            yield {"state": state, "prefix": prefix}
    finally:
        if stack.read_state() is not None:
            stack.down()
        if state is not None:
            stack.drop_databases(state.stack_settings())
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _params(name: str, trials: int, max_steps: int, **search):
    from flows.params import CollectionParams, SearchParams

    return (CollectionParams(collection="sinusoid", shots=5, queries=5),
            SearchParams(trials=trials, algorithms=ALGORITHMS, max_steps=max_steps, val_every=max_steps // 2, val_tasks=5,
                         pruner="none", storage=stack.read_state().settings.optuna_db, study_name=name, device="cpu",
                         workers=2, warm_start=False, **search))  # exact counts: only the defaults are queued


def _study(name: str) -> optuna.Study:
    from metaauto.search import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(stack.read_state().settings.optuna_db))


def test_status_names_urls_stores_and_worker_pids(up):
    state = up["state"]
    text = runner.invoke(app, ["stack", "status"])
    assert text.exit_code == 0, text.output
    assert f"Prefect: {state.prefect.url}" in text.output and f"MLflow:  {state.mlflow_url}" in text.output
    assert f"export PREFECT_API_URL={state.prefect_api}" in text.output
    result = runner.invoke(app, ["stack", "status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["up"] and status["prefect"]["healthy"] and status["mlflow"]["healthy"]
    assert [(w["kind"], w["online"]) for w in status["workers"]] == [("tasks", True), ("tasks", True), ("pool", True)]
    assert "task worker" in text.output and "process worker on metaauto-trials" in text.output
    assert all(f"pid {w['pid']}" in text.output for w in status["workers"])
    assert status["stores"]["optuna_db"].endswith(f"/{up['prefix']}_optuna")
    assert status["deployment"] == "search-worker/scaleout"
    # every server binds loopback only
    assert state.prefect.host == state.mlflow.host == "127.0.0.1"


def test_search_runs_on_two_workers_each_trial_once_and_the_champion_is_registered(up):
    from mlflow import MlflowClient

    from flows.evaluate import evaluate_and_promote
    from flows.params import EvalParams
    from flows.search import search_learners
    from flows.worker import WORKER_ATTR

    name = f"stack-{uuid.uuid4().hex[:6]}"
    data, search = _params(name, trials=6, max_steps=80)
    summary = search_learners(data=data, search=search, experiment="stack-test")

    trials = _study(name).get_trials()
    assert summary.states == {"COMPLETE": 6} and len(trials) == 6
    assert sorted(t.number for t in trials) == list(range(6))
    workers = {t.user_attrs[WORKER_ATTR] for t in trials}
    assert len(workers) == 2, f"both workers should have run trials: {workers}"
    task_workers = {w.pid for w in up["state"].workers if w.kind == "tasks"}
    assert {int(w.rsplit(":", 1)[1]) for w in workers} == task_workers, "the trials ran inside the long-lived task workers"
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "no two trials overlapped: the workers did not run in parallel"

    client = MlflowClient(up["state"].mlflow_url)
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED"
    nested = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    numbers = sorted(int(r.data.tags["optuna.trial"]) for r in nested if r.data.tags.get("optuna.state") == "COMPLETE")
    assert numbers == list(range(6)), "each trial has exactly one finished MLflow run"
    assert {t.user_attrs["mlflow.run_id"] for t in trials} == {r.info.run_id for r in nested}
    assert "search/leaderboard.json" in {a.path for a in client.list_artifacts(parent.info.run_id, "search")}

    model = f"stack-{name}"
    outcome = evaluate_and_promote(data=data, search=search.model_copy(update={"workers": 0}), experiment="stack-test",
                                   evaluation=EvalParams(final_steps=40, tasks=20, baselines=False, register_as=model))
    champion = client.get_model_version_by_alias(model, "champion")
    assert champion.run_id == outcome.final.run_id
    # the model's files went through the server's artifact proxy into the stack's artifact store
    assert any((stack.stack_dir() / "artifacts").rglob("MLmodel"))


def test_the_deployment_way_runs_the_search_in_a_flow_run_on_the_work_pool(up):
    from flows.search import search_learners
    from flows.worker import WORKER_ATTR

    name = f"stack-pool-{uuid.uuid4().hex[:6]}"
    data, search = _params(name, trials=3, max_steps=40, dispatch="deployment")
    summary = search_learners(data=data, search=search.model_copy(update={"workers": 1}), experiment="stack-test")
    assert summary.states == {"COMPLETE": 3}
    pids = {int(t.user_attrs[WORKER_ATTR].rsplit(":", 1)[1]) for t in _study(name).get_trials()}
    # the flow-run process may have exited by now, so it is found through the run's record, not the process
    # tree: the pool's process worker records the pid it started as the run's infrastructure pid
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:  # limit and sort given: Prefect 3.8.8's client sends nulls its server refuses
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=name)), limit=50,
                                     sort=FlowRunSort.ID_DESC)
    started = {int(r.infrastructure_pid.rsplit(":", 1)[-1]) for r in runs if r.infrastructure_pid}
    task_workers = {w.pid for w in up["state"].workers if w.kind == "tasks"}
    assert len(pids) == 1 and pids <= started and not pids & task_workers, \
        f"the trials ran in a flow-run process the pool's worker started: trials {pids}, flow runs {started}"


def _worker_of(pid: int, state: stack.StackState) -> stack.WorkerInfo:
    for worker in state.workers:
        if pid == worker.pid or pid in stack.descendants(worker.pid):
            return worker
    raise AssertionError(f"trial process {pid} belongs to no stack worker")


def test_a_worker_killed_mid_trial_leaves_a_study_that_completes(up):
    from flows.worker import WORKER_ATTR

    name = f"stack-kill-{uuid.uuid4().hex[:6]}"
    data, search = _params(name, trials=5, max_steps=150, heartbeat_interval=1, grace_period=3)
    thread, outcome = _search_in_thread(data, search)
    state = stack.read_state()
    deadline = time.monotonic() + 120
    victim = None
    while victim is None:
        assert time.monotonic() < deadline and thread.is_alive(), f"no trial started: {outcome}"
        for trial in _running(name):
            if trial.user_attrs.get(WORKER_ATTR) and trial.datetime_start is not None:
                victim = trial
        time.sleep(0.3)
    worker = _worker_of(int(victim.user_attrs[WORKER_ATTR].rsplit(":", 1)[1]), state)
    assert worker.kind == "tasks"
    stack.kill_tree(worker.pid, sig=signal.SIGKILL)  # the task worker, mid-trial

    thread.join(timeout=180)
    assert not thread.is_alive(), "search-learners never returned after a worker died"
    assert "error" not in outcome, repr(outcome.get("error"))
    trials = _study(name).get_trials()
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == killed.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5  # the study got its 5 trials, the retry included
    assert not any(t.state == TrialState.RUNNING for t in trials)


def _search_in_thread(data, search) -> tuple[threading.Thread, dict]:
    from flows.search import search_learners

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["summary"] = search_learners(data=data, search=search, experiment="stack-test")
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    # the Prefect settings (PREFECT_API_URL) live in a context variable: the thread gets a copy of ours
    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
    thread.start()
    return thread, outcome


def test_a_search_whose_every_worker_died_fails_and_says_so(up):
    from flows.search import search_learners
    from flows.worker import WORKER_ATTR
    from metaauto.search.space import SearchError

    state = stack.read_state()
    live = [w for w in state.workers if w.kind == "tasks" and alive(w.pid)]
    assert len(live) == 1, "the previous test killed one of the two task workers"
    name = f"stack-dead-{uuid.uuid4().hex[:6]}"
    data, search = _params(name, trials=4, max_steps=400, heartbeat_interval=1, grace_period=3, stall_seconds=5)
    thread, outcome = _search_in_thread(data, search.model_copy(update={"workers": 1}))
    deadline = time.monotonic() + 120
    while not any(t.user_attrs.get(WORKER_ATTR) for t in _running(name)):
        assert time.monotonic() < deadline and thread.is_alive(), f"no trial started: {outcome}"
        time.sleep(0.3)
    stack.kill_tree(live[0].pid, sig=signal.SIGKILL)  # the last worker: nobody is left to take the retry
    thread.join(timeout=120)
    assert not thread.is_alive(), "search-learners waits forever when every worker is gone"
    error = outcome.get("error")
    assert isinstance(error, SearchError), repr(error)
    assert "no worker is taking them" in str(error) and "metaauto stack status" in str(error)

    # and with no task worker left, a new search is refused at once instead of waiting
    data, search = _params(f"stack-none-{uuid.uuid4().hex[:6]}", trials=2, max_steps=20)
    with pytest.raises(SearchError, match="no task worker serves the search-worker task"):
        search_learners(data=data, search=search, experiment="stack-test")


def _running(name: str) -> list:
    try:
        return _study(name).get_trials(states=(TrialState.RUNNING,))
    except KeyError:  # the study is not created yet
        return []


def test_stack_down_leaves_nothing_running(up):
    state = stack.read_state()
    assert state is not None, "the module's stack is not up"
    pids = set(state.pids())
    for pid in list(pids):
        pids |= set(stack.descendants(pid))
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)  # this process's flow-run logs reach the server before it stops
    result = runner.invoke(app, ["stack", "down"])
    assert result.exit_code == 0, result.output
    assert "prefect" in result.output and "mlflow" in result.output
    left = [pid for pid in pids if alive(pid)]
    assert not left, f"processes left after stack down: {left}"
    assert port_free("127.0.0.1", state.prefect.port) and port_free("127.0.0.1", state.mlflow.port)
    after = runner.invoke(app, ["stack", "status"])
    assert after.exit_code == 1 and "not up" in after.output


def test_a_missing_postgresql_is_named_and_nothing_starts():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    result = runner.invoke(app, ["stack", "up", "--postgres", url, "--prefect-port", str(free_port()),
                                 "--mlflow-port", str(free_port())])
    assert result.exit_code == 2
    assert f"PostgreSQL at {url} is not reachable" in result.output
    assert stack.read_state() is None
