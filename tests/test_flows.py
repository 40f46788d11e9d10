"""The Prefect flows, run for real on Prefect's test harness (a temporary server), the session's MLflow
store and a real Optuna storage: the success path of the whole pipeline on sinusoid, the resumption of a
finished study, and bad input failing the ingest flow with the validator's message."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows import (CollectionParams, EvalParams, PipelineParams, SearchParams, TransferParams, ingest_collection,
                   meta_pipeline, search_learners)
from metaauto.errors import CollectionError
from _prefect_support import harness, read_artifacts  # noqa: F401  (harness: a fixture)

SINUSOID = CollectionParams(collection="sinusoid", shots=5, queries=10)
TINY = SearchParams(trials=2, algorithms=["fomaml", "reptile"], max_steps=6, val_every=3, val_tasks=5, pruner="none")


@pytest.fixture(scope="module")
def pipeline(harness):
    name = f"sin-{uuid.uuid4().hex[:6]}"
    experiment = f"flows-{name}"
    params = PipelineParams(
        data=SINUSOID, search=TINY.model_copy(update={"study_name": name}),
        evaluation=EvalParams(final_steps=6, tasks=20, pretrain_steps=20, scratch_steps=5, register_as=name),
        transfer=TransferParams(model_uri=f"models:/{name}@champion", target=SINUSOID, tasks=10, pretrain_steps=20,
                                scratch_steps=5),
        experiment=experiment,
    )
    return name, params, meta_pipeline(params)


def test_pipeline_registers_a_champion_and_tracks_every_step(pipeline):
    from metaauto.tracking import get_client

    name, params, result = pipeline
    client = get_client()
    assert result.ingest.fingerprint and result.ingest.splits
    assert result.search.states == {"COMPLETE": 2}
    assert result.evaluation.final.version.name == name
    assert client.get_model_version_by_alias(name, "champion").version == result.evaluation.final.version.version
    assert result.where_to_look.model_uri == f"models:/{name}@champion"
    transferred = {r["method"] for r in result.transfer["results"]}
    assert result.transfer["metric"] == "mse" and transferred == {result.search.best_params["algorithm"], "scratch", "pretrain"}

    experiment = client.get_experiment_by_name(params.experiment)
    runs = client.search_runs([experiment.experiment_id])
    kinds = [r.data.tags.get("metaauto.kind") for r in runs]
    assert kinds.count("ingest") == 1 and kinds.count("search") == 1 and kinds.count("transfer") == 1
    parent = result.search.parent_run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(children) == 3  # two trials and the final training of the best
    ingest = next(r for r in runs if r.data.tags.get("metaauto.kind") == "ingest")
    assert ingest.inputs.dataset_inputs[0].dataset.digest == result.ingest.fingerprint
    trial_runs = {row["run_id"] for row in result.search.leaderboard}
    assert trial_runs <= {r.info.run_id for r in children}


def test_pipeline_result_is_json_ready(pipeline):
    """``metaauto pipeline --json`` prints the typed result's to_dict: the keys the command always printed."""
    import json

    _, _, result = pipeline
    data = json.loads(json.dumps(result.to_dict(), default=str))
    assert set(data) == {"ingest", "search", "evaluation", "transfer", "where_to_look"}
    assert data["evaluation"]["registered"]["name"] == result.evaluation.final.version.name
    assert data["evaluation"]["meta_test"]["metric"] == "mse" and data["evaluation"]["promotion"]["promoted"]
    assert data["search"]["states"] == result.search.states and data["ingest"]["fingerprint"] == result.ingest.fingerprint
    assert data["where_to_look"]["model_uri"] == result.where_to_look.model_uri


def test_pipeline_publishes_artifacts(pipeline):
    name, _, _ = pipeline
    keys = [f"ingest-sinusoid", "splits-sinusoid", f"search-progress-{name}", f"leaderboard-{name}", f"evaluation-{name}",
            "transfer-sinusoid", "pipeline-sinusoid"]
    found = read_artifacts(keys)
    assert set(found) == set(keys)
    assert found[f"search-progress-{name}"]["data"] == 100.0
    assert "Winner" in found[f"evaluation-{name}"]["data"] and "wilcoxon" in found[f"evaluation-{name}"]["data"]
    assert "fomaml" in str(found[f"leaderboard-{name}"]["data"]) or "reptile" in str(found[f"leaderboard-{name}"]["data"])


def test_rerun_resumes_the_study_without_redoing_trials(pipeline):
    import optuna

    from metaauto.search import default_storage_url, open_storage

    name, params, first = pipeline
    again = search_learners(params.data, params.search, experiment=params.experiment)
    study = optuna.load_study(study_name=name, storage=open_storage(default_storage_url()))
    assert len(study.trials) == 2 and again.states == first.search.states
    assert again.parent_run_id == first.search.parent_run_id


def test_bad_table_fails_ingest_with_the_validators_message(harness, tmp_path: Path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame([{"site": f"s{t}", "x": rng.normal(), "label": f"c{c}"} for t in range(9) for c in range(3) for _ in range(4)])
    frame.loc[17, "x"] = np.nan
    frame.to_csv(tmp_path / "bad.csv", index=False)
    bad = CollectionParams(collection=str(tmp_path / "bad.csv"), ways=2, options={"task_col": "site", "label_col": "label"})
    with pytest.raises(CollectionError, match=r"feature column 'x' has a missing or infinite value"):
        ingest_collection(bad)
    missing = bad.model_copy(update={"options": {"task_col": "user", "label_col": "label"}})
    with pytest.raises(CollectionError, match=r"bad\.csv: column 'user' not found"):
        ingest_collection(missing)
    with pytest.raises(ValueError):  # the form rejects impossible values before any run starts
        CollectionParams(collection="omniglot", ways=1)


def test_search_on_a_dask_cluster_runs_every_trial_once(harness):
    """task_runner='dask': trials run in the worker processes of a local Dask cluster, on a journal storage."""
    import optuna

    from flows.search import storage_url
    from metaauto.search import open_storage
    from metaauto.tracking import get_client

    name = f"dask-{uuid.uuid4().hex[:6]}"
    search = TINY.model_copy(update={"study_name": name, "trials": 3, "parallelism": 2, "task_runner": "dask"})
    result = search_learners(SINUSOID, search, experiment=f"flows-{name}")
    assert storage_url(search, name).startswith("journal:")
    # every trial ran to an outcome (a sampled configuration may diverge and be pruned), none is lost or left running
    assert sum(result.states.values()) == 3 and set(result.states) <= {"COMPLETE", "PRUNED"}
    study = optuna.load_study(study_name=name, storage=open_storage(result.storage))
    assert sorted(t.number for t in study.trials) == [0, 1, 2]
    runs = get_client().search_runs([get_client().get_experiment_by_name(f"flows-{name}").experiment_id])
    trial_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert sorted(r.data.tags["optuna.trial"] for r in trial_runs) == ["0", "1", "2"]
