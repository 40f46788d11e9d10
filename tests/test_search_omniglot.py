"""A small search on real Omniglot 5-way 1-shot: several algorithms, pruned trials, nested MLflow runs
and a registered champion, on the embedded SQLite storage and the session's MLflow store.

Training and the TPE sampler are seeded, so which trials the median pruner stops is reproducible."""

from __future__ import annotations

import os
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from metaauto.search import Budget, run_search
from metaauto.search.tracking import PARENT_TAG

ALGORITHMS = ["protonet", "matchingnet"]


@pytest.fixture(scope="module")
def omniglot(data_dir):
    from metaauto.tasks import load_collection

    return load_collection("omniglot", data_dir=data_dir)


@pytest.fixture(scope="module")
def omniglot_search(omniglot, single_thread):
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    from metaauto.tracking import EvalSettings, get_client

    client = get_client()
    name = f"omni-search-{uuid.uuid4().hex[:8]}"
    result = run_search(
        omniglot, ways=5, shots=1, queries=5, trials=7, algorithms=ALGORITHMS, pruner="median", study_name=name,
        budget=Budget(max_steps=24, val_every=6, val_tasks=20), overrides={"backbone.width": 16, "meta_batch_size": 4},
        register_as=name, client=client, warm_start=False,
        evaluation=EvalSettings(tasks=30, scratch_steps=3, pretrain_steps=5, curve_tasks=5, curve_max_steps=2),
    )
    return name, result, optuna.load_study(study_name=name, storage=result.storage), client


def test_omniglot_search_prunes_and_registers_a_champion(omniglot_search):
    name, result, study, client = omniglot_search
    trials = study.get_trials()
    assert len(trials) == 7
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert {t.params["algorithm"] for t in complete} == set(ALGORITHMS)
    assert pruned and all("pruned at step" in t.user_attrs["metaauto.reason"] for t in pruned)
    assert study.best_value > 0.3  # 5-way chance is 0.2; even 24 steps of a width-16 protonet learn something

    parent = client.get_run(result.parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{result.parent_run_id}'")
    assert len(children) == len(trials) + 1  # one run per trial and the final training of the best
    assert {r.data.tags["optuna.state"] for r in children if "optuna.state" in r.data.tags} >= {"COMPLETE", "PRUNED"}

    final = client.get_run(result.final.run_id)
    assert final.data.params["algorithm"] == study.best_trial.params["algorithm"]
    assert "meta_test/accuracy" in final.data.metrics and "baseline/pretrain/accuracy" in final.data.metrics
    assert client.get_model_version_by_alias(name, "champion").run_id == result.final.run_id
