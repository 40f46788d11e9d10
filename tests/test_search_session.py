"""The search lifecycle's value objects and rules, and the workers' trial-claiming protocol on a real
PostgreSQL study (two claimers in threads, live heartbeats, a dead trial retried)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from metaauto.evaluation import EvaluationReport
from metaauto.search import (Budget, EpisodeSettings, SearchProblem, SearchSession, SearchSettings, TrialOutcome,
                             open_storage, resolve_storage_url, run_search)
from metaauto.search.distributed import WORKER_ATTR, heartbeat, work
from metaauto.search.storage import trial_id

POSTGRES = os.environ.get("METAAUTO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TINY = Budget(max_steps=4, val_every=2, val_tasks=5)


@pytest.fixture(scope="module")
def sinusoid(single_thread):
    from metaauto.tasks import load_collection

    return load_collection("sinusoid")


def test_one_storage_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("METAAUTO_SEARCH_STORAGE", raising=False)
    assert resolve_storage_url().startswith("sqlite:///") and resolve_storage_url().endswith("/search/optuna.db")
    assert resolve_storage_url(study_name="s", parallel=True).endswith("/search/s.journal")
    monkeypatch.setenv("METAAUTO_SEARCH_STORAGE", f"sqlite:///{tmp_path / 'shared.db'}")
    assert resolve_storage_url(study_name="s", parallel=True) == f"sqlite:///{tmp_path / 'shared.db'}"
    assert resolve_storage_url("journal:/x") == "journal:/x"


def test_run_search_honours_the_shared_storage(sinusoid, monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("METAAUTO_SEARCH_STORAGE", url)
    name = f"env-{uuid.uuid4().hex[:8]}"
    result = run_search(sinusoid, shots=5, queries=5, trials=1, algorithms=["reptile"], budget=TINY, pruner="none",
                        study_name=name, track=False, warm_start=False)
    assert result.storage == url and result.states == {"COMPLETE": 1}
    assert name in optuna.get_all_study_names(open_storage(url))


def test_the_evaluation_report_round_trips_its_json():
    data = {
        "episodes": {"collection": "omniglot", "fingerprint": "abc", "split": "test", "ways": 5, "shots": 1, "queries": 15,
                     "tasks": 3, "seed": 0},
        "metric": "accuracy",
        "learner": {"name": "protonet", "mean": 0.9, "ci95": 0.01, "per_task": [0.8, 0.9, 1.0]},
        "baselines": {"scratch": {"mean": 0.5, "ci95": 0.02, "per_task": [0.4, 0.5, 0.6], "details": {"steps": 5}},
                      "pretrain": {"mean": 0.95, "ci95": 0.01, "per_task": [0.9, 0.95, 1.0], "details": {}}},
        "paired_difference": {"scratch": {"mean": 0.4, "ci95": 0.0}, "pretrain": {"mean": -0.05, "ci95": 0.01}},
        "adaptation_curve": {"x": "shots", "steps": [1], "mean": [0.9], "ci95": [0.01]},
        "training": {"final_step": 10},
    }
    report = EvaluationReport.from_dict(json.loads(json.dumps(data)))
    assert json.dumps(report.to_dict()) == json.dumps(data)  # same keys, same order: the artifact's layout
    assert report.winner() == "pretrain" and report.beats_a_baseline() and report.lead_over_baselines() == pytest.approx(0.05)
    assert report.summary().to_dict() == {"metric": "accuracy", "tasks": 3, "protonet": {"mean": 0.9, "ci95": 0.01},
                                          "scratch": {"mean": 0.5, "ci95": 0.02}, "pretrain": {"mean": 0.95, "ci95": 0.01}}


def test_the_form_offers_every_learner_of_the_catalogue():
    from flows.params import SearchParams
    from metaauto.learners import LEARNERS

    schema = SearchParams.model_json_schema()["properties"]
    assert schema["algorithms"]["anyOf"][0]["items"]["enum"] == list(LEARNERS)
    assert {"matchingnet", "relationnet"} <= set(LEARNERS)


@pytest.fixture
def postgres_problem(sinusoid):
    try:
        storage = open_storage(POSTGRES)
    except Exception as exc:  # no server: these tests need the database the protocol is for
        pytest.skip(f"PostgreSQL at {POSTGRES} is not reachable: {exc}")
    name = f"claim-{uuid.uuid4().hex[:8]}"
    problem = SearchProblem.build(sinusoid, EpisodeSettings.for_collection(sinusoid, None, 5, 5), budget=TINY,
                                  algorithms=["fomaml"], study_name=name)
    yield problem
    if name in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name=name, storage=storage)


def _slow(seconds: float):
    def run(trial: optuna.Trial) -> TrialOutcome:
        time.sleep(seconds)
        return TrialOutcome(trial.number, TrialState.COMPLETE, float(trial.number))

    return run


def test_two_claimers_run_each_trial_once_and_heartbeats_keep_long_trials_alive(postgres_problem):
    settings = SearchSettings(trials=4, pruner="none", storage=POSTGRES, warm_start=False, heartbeat_interval=1, grace_period=2)
    SearchSession.start(postgres_problem, settings, track=False)
    sessions = [SearchSession.join(postgres_problem, settings, sampler_seed=i, track=False) for i in range(2)]
    ran: list[list[TrialOutcome]] = [[], []]
    # each trial outlives the grace period: a heartbeat that stopped after its first beat would let the
    # other claimer fail it
    threads = [threading.Thread(target=lambda i=i: ran[i].extend(work(s, _slow(3.0), wait=0.2))) for i, s in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    trials = sessions[0].study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert sorted(o.number for o in ran[0] + ran[1]) == [0, 1, 2, 3] and ran[0] and ran[1]
    assert all(t.user_attrs[WORKER_ATTR] for t in trials)


def test_a_trial_whose_heartbeat_stopped_is_failed_and_run_again(postgres_problem):
    settings = SearchSettings(trials=2, pruner="none", storage=POSTGRES, warm_start=False, heartbeat_interval=1, grace_period=2)
    session = SearchSession.start(postgres_problem, settings, track=False)
    dead = session.ask()  # a worker that beat once, then died
    with heartbeat(session.storage, trial_id(session.storage, session.study.study_name, dead.number)):
        pass
    time.sleep(2.5)
    ran: list[TrialOutcome] = []
    # without a recorded heartbeat the dead trial would never go stale and the claimer would wait for it forever
    claimer = threading.Thread(target=lambda: ran.extend(work(SearchSession.join(postgres_problem, settings, track=False),
                                                              _slow(0.0), wait=0.2)), daemon=True)
    claimer.start()
    claimer.join(timeout=60)
    assert not claimer.is_alive(), "the dead trial was never failed and retried"
    trials = session.study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    retry = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == dead.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].number in {o.number for o in ran}
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
