"""Two worker processes share one study in PostgreSQL without running any trial twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from metaauto.search import Budget, SearchSpace, open_storage, run_search

POSTGRES = os.environ.get("METAAUTO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ALGORITHMS = ["maml", "fomaml", "reptile", "anil"]


@pytest.fixture
def postgres_study():
    try:
        storage = open_storage(POSTGRES)
    except Exception as exc:  # no server: this test needs the database the issue names
        pytest.skip(f"PostgreSQL at {POSTGRES} is not reachable: {exc}")
    name = f"workers-{uuid.uuid4().hex[:8]}"
    yield storage, name
    if name in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name=name, storage=storage)


def _worker_command(name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "metaauto.cli", "search", "--collection", "sinusoid", "--shots", "5", "--queries", "5",
            "--val-tasks", "5", "--pruner", "none", "--no-track", "--no-progress", "--storage", POSTGRES, "--study", name,
            "--algorithms", ",".join(ALGORITHMS), "--worker", *extra]


def test_two_workers_share_one_study(postgres_study, single_thread):
    from metaauto.tasks import load_collection

    storage, name = postgres_study
    common = dict(shots=5, queries=5, algorithms=ALGORITHMS, pruner="none", storage=POSTGRES, study_name=name, track=False,
                  warm_start=False)  # only the published defaults are enqueued: the counts below are exact
    # the lead creates the study and queues the published defaults; the workers run every trial
    run_search(load_collection("sinusoid"), trials=0, budget=Budget(max_steps=4, val_every=2, val_tasks=5), **common)
    command = _worker_command(name, "--max-steps", "4", "--val-every", "2", "--trials", "6", "--json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=120) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-2000:]

    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    # each worker stops once 6 trials have finished; one in flight at that moment may still complete
    assert 6 <= len(finished) <= 7 and len(finished) == len(trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    space = SearchSpace("regression", "mlp", ALGORITHMS)
    queued = [t for t in trials if t.user_attrs.get("enqueued") == "published defaults"]
    assert sorted(t.params["algorithm"] for t in queued) == sorted(ALGORITHMS)  # each default ran exactly once
    assert all(t.params == space.defaults(t.params["algorithm"]) for t in queued)


def test_a_dead_workers_trial_is_retried(postgres_study, single_thread):
    from metaauto.tasks import load_collection

    storage, name = postgres_study
    sinusoid = load_collection("sinusoid")
    common = dict(shots=5, queries=5, algorithms=ALGORITHMS, pruner="none", storage=POSTGRES, study_name=name, track=False,
                  heartbeat_interval=1, grace_period=2, warm_start=False)
    run_search(sinusoid, trials=0, budget=Budget(max_steps=4, val_every=2, val_tasks=5), **common)
    # a worker on an endless trial (the queued maml default), killed while the trial runs; the next worker
    # runs the other three defaults and the retry
    doomed = subprocess.Popen(_worker_command(name, "--max-steps", "10000000", "--val-every", "1000000", "--trials", "1",
                                              "--heartbeat-interval", "1", "--grace-period", "2"),
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    study = optuna.load_study(study_name=name, storage=storage)
    maml = SearchSpace("regression", "mlp", ALGORITHMS).defaults("maml")
    try:
        deadline = time.monotonic() + 90
        while study.get_trials()[0].params != maml:  # drawn: the trial is training
            assert doomed.poll() is None and time.monotonic() < deadline, "the worker never started its trial"
            time.sleep(0.2)
    finally:
        doomed.kill()
        doomed.wait()
    time.sleep(3)  # past the grace period: the trial's heartbeat has stopped

    run_search(sinusoid, trials=5, worker=True, budget=Budget(max_steps=4, val_every=2, val_tasks=5), **common)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[0].params == maml
