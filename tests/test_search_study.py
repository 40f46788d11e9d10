"""Whole searches on the sinusoid collection: real SQLite/journal storages and the session's real MLflow store."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from metaauto.engine import Callback
from metaauto.search import Budget, SearchError, SearchSpace, open_storage, run_search
from metaauto.search.tracking import LEADERBOARD_JSON, PARENT_TAG

optuna.logging.set_verbosity(optuna.logging.WARNING)
GRADIENT = ["maml", "fomaml", "reptile", "anil", "metasgd"]
TINY = Budget(max_steps=20, val_every=5, val_tasks=10)
EPISODES = dict(shots=5, queries=10)


@pytest.fixture(scope="module")
def sinusoid(single_thread):
    from metaauto.tasks import load_collection

    return load_collection("sinusoid")


@pytest.fixture(scope="module")
def client():
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    from metaauto.tracking import get_client

    return get_client()


@pytest.fixture(scope="module")
def search(sinusoid, client):
    from metaauto.tracking import EvalSettings

    name = f"sin-search-{uuid.uuid4().hex[:8]}"
    result = run_search(
        sinusoid, **EPISODES, trials=8, algorithms=GRADIENT, budget=TINY, pruner="median", study_name=name,
        overrides={"metasgd.inner_steps": 1, "meta_lr": {"low": 3e-4, "high": 3e-3}}, register_as=name, client=client,
        evaluation=EvalSettings(tasks=20, scratch_steps=3, pretrain_steps=3, curve_tasks=5, curve_max_steps=2),
    )
    study = optuna.load_study(study_name=name, storage=result.storage)
    return name, result, study


def test_defaults_run_first_and_fixed_parameters_hold(search):
    _, _, study = search
    space = SearchSpace("regression", "mlp", GRADIENT, {"metasgd.inner_steps": 1, "meta_lr": {"low": 3e-4, "high": 3e-3}})
    trials = study.get_trials()
    assert [t.params for t in trials[: len(GRADIENT)]] == [space.defaults(a) for a in GRADIENT]
    for t in trials:
        assert 3e-4 <= t.params["meta_lr"] <= 3e-3
        if t.params["algorithm"] == "metasgd":
            assert t.params["metasgd.inner_steps"] == 1


def test_search_completes_with_pruning_and_several_algorithms(search):
    _, result, study = search
    trials = study.get_trials()
    assert len(trials) == 8
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len({t.params["algorithm"] for t in complete}) >= 2
    assert pruned and all(t.user_attrs["metaauto.reason"] for t in pruned)
    assert all(t.last_step < TINY.max_steps for t in pruned if "pruned at step" in t.user_attrs["metaauto.reason"])
    assert result.best_trial == study.best_trial.number and result.best_value == study.best_value
    assert result.leaderboard[0]["trial"] == study.best_trial.number


def test_trials_are_nested_runs_under_the_parent(search, client, tmp_path):
    name, result, study = search
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["optuna.study"] == name
    children = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")
    by_trial = {r.data.tags["optuna.trial"]: r for r in children if "optuna.best" not in r.data.tags}
    assert len(by_trial) == len(study.trials)
    for trial in study.trials:
        run = by_trial[str(trial.number)]
        assert run.data.tags["optuna.state"] == trial.state.name
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}[trial.state.name]
        assert run.data.params["algorithm"] == trial.params["algorithm"]
        assert run.data.tags["metaauto.reason"] == trial.user_attrs["metaauto.reason"]
        if trial.last_step is not None:  # every reported validation is on the run, the pruning one included
            assert run.data.metrics["meta_val/mse"] == pytest.approx(-trial.intermediate_values[trial.last_step])
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "search")}
    assert {LEADERBOARD_JSON, "search/leaderboard.csv", "search/optimization_history.png"} <= artifacts
    # interactive versions of every plot drawable with this many complete trials, via optuna.visualization
    html = {f"search/{p}.html" for p in ("optimization_history", "param_importances", "parallel_coordinate")}
    drawn = {p for p in html if Path(p).name not in result.plots_skipped}
    assert "search/optimization_history.html" in drawn and drawn <= artifacts
    page = Path(client.download_artifacts(result.parent_run_id, "search/optimization_history.html", str(tmp_path))).read_text()
    assert "plotly" in page.lower() and "Optimization History" in page
    board = json.loads(Path(client.download_artifacts(result.parent_run_id, LEADERBOARD_JSON, str(tmp_path))).read_text())
    assert [row["trial"] for row in board] == [row["trial"] for row in result.leaderboard]
    assert sorted(row["trial"] for row in board) == [t.number for t in study.trials]


def test_best_configuration_is_evaluated_and_registered(search, client):
    name, result, study = search
    final = client.get_run(result.final.run_id)
    assert final.data.tags[PARENT_TAG] == result.parent_run_id
    assert final.data.tags["optuna.trial"] == str(study.best_trial.number)
    assert final.data.params["algorithm"] == study.best_trial.params["algorithm"]
    assert "meta_test/mse" in final.data.metrics and "baseline/scratch/mse" in final.data.metrics
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == result.final.run_id


class _Explode(Callback):
    """Raises in every trial of one algorithm, as a bug in user code would."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm

    def on_step(self, run, record):
        if run.learner.name == self.algorithm and record.step == 2:
            raise RuntimeError("boom in user callback")


def test_errors_and_divergence_do_not_stop_the_study(sinusoid, tmp_path):
    name = f"sin-fail-{uuid.uuid4().hex[:8]}"
    result = run_search(
        sinusoid, **EPISODES, trials=3, algorithms=["maml", "fomaml", "reptile"], budget=Budget(max_steps=6, val_every=3, val_tasks=5),
        pruner="none", study_name=name, overrides={"maml.inner_lr": 1e6}, track=False, callbacks=[_Explode("fomaml")],
        storage=f"journal:{tmp_path / 'journal.log'}",
    )
    assert (tmp_path / "journal.log").stat().st_size > 0
    trials = {t["trial"]: t for t in result.leaderboard}
    assert trials[0]["state"] == "PRUNED" and trials[0]["reason"].startswith("diverged")
    assert trials[1]["state"] == "FAIL" and trials[1]["reason"] == "RuntimeError: boom in user callback"
    assert trials[2]["state"] == "COMPLETE" and result.best_trial == 2


def test_resume_continues_the_study_and_requeues_interrupted_trials(sinusoid, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    name = f"sin-resume-{uuid.uuid4().hex[:8]}"
    kwargs = dict(**EPISODES, algorithms=["fomaml", "reptile"], budget=Budget(max_steps=4, val_every=2, val_tasks=5),
                  pruner="none", storage=storage, study_name=name, track=False,
                  warm_start=False)  # only the published defaults are queued: the states below are exact
    run_search(sinusoid, trials=1, **kwargs)
    with pytest.raises(SearchError, match="--resume"):
        run_search(sinusoid, trials=2, **kwargs)
    # a crash mid-trial leaves it RUNNING (here: the queued reptile default); a single-process resume
    # fails it and queues its parameters again
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    crashed = study.ask()
    result = run_search(sinusoid, trials=4, resume=True, **kwargs)
    trials = study.get_trials()
    assert result.states == {"COMPLETE": 3, "FAIL": 1} and len(trials) == 4
    assert trials[crashed.number].user_attrs["metaauto.reason"].startswith("interrupted")
    retried = [t for t in trials if t.user_attrs.get("retried_from") == crashed.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == SearchSpace("regression", "mlp", ["fomaml", "reptile"]).defaults("reptile")
    # the published defaults were enqueued once, when the study was created
    assert sum(1 for t in trials if t.user_attrs.get("enqueued") == "published defaults") == 2


def test_seconds_budget_stops_a_trial_gracefully(sinusoid):
    result = run_search(
        sinusoid, **EPISODES, trials=1, algorithms=["reptile"], budget=Budget(max_steps=100_000, seconds=0.3, val_every=50, val_tasks=5),
        pruner="hyperband", study_name=f"sin-seconds-{uuid.uuid4().hex[:8]}", track=False,
    )
    (row,) = result.leaderboard
    assert row["state"] == "COMPLETE" and row["reason"] == "time_budget"
    assert 0 < row["last_step"] < 100_000  # validated once more at the step it stopped


def test_plots_of_a_one_trial_study_are_logged_or_skipped_with_reason(client, tmp_path):
    from metaauto.search.tracking import log_study
    from metaauto.tracking.run import TrackedRun

    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    run = TrackedRun.start(run_name="plots-one-trial", client=client)
    skipped = log_study(run, study)
    run.end("FINISHED")
    artifacts = {a.path for a in client.list_artifacts(run.run_id, "search")}
    assert "search/optimization_history.html" in artifacts and "search/parallel_coordinate.html" in artifacts
    # importances need several complete trials in some optuna versions: then skipped with the reason, never raised
    for plot in ("param_importances.html", "param_importances.png"):
        assert (f"search/{plot}" in artifacts) != (plot in skipped)
    assert ("search/plots_skipped.json" in artifacts) == bool(skipped)


def test_engine_raises_a_divergence_error_that_the_search_prunes(sinusoid, tmp_path):
    from metaauto.errors import DivergenceError, TrainingError
    from metaauto.search.objective import _is_divergence

    name = f"sin-nan-{uuid.uuid4().hex[:8]}"
    result = run_search(sinusoid, **EPISODES, trials=1, algorithms=["fomaml"], budget=Budget(max_steps=6, val_every=3, val_tasks=5),
                        pruner="none", study_name=name, overrides={"meta_lr": 1e9, "fomaml.inner_lr": 1e6}, track=False,
                        storage=f"sqlite:///{tmp_path / 'nan.db'}")
    (trial,) = result.leaderboard
    # the engine's DivergenceError on the training loss, caught by type, not a validation NaN
    assert trial["state"] == "PRUNED" and trial["reason"].startswith("diverged: the meta-loss became")
    assert issubclass(DivergenceError, TrainingError)
    assert _is_divergence(DivergenceError("x")) and not _is_divergence(TrainingError("the meta-loss became nan"))
