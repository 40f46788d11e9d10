"""The two transfer domains through the real flows (Prefect test harness, the session's MLflow store, a
real Optuna storage) on the real MovieLens and heart-disease data, with tiny budgets: ingest, search,
evaluate-and-promote under the pipeline's default names, then ``transfer-to-domain`` scoring the
champion against the domain's baselines. Plus the refusals (a site the champion trained on, a K the site
cannot serve) and a user's own CSV through the ``metaauto pipeline`` command.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest

from flows import CollectionParams, EvalParams, PipelineParams, SearchParams, TransferParams, meta_pipeline, transfer_to_domain
from metaauto.evaluation.domains import DomainTransferError, default_model_name, pipeline_defaults
from _prefect_support import harness, read_artifacts  # noqa: F401  (harness: a fixture)

REPO = Path(__file__).resolve().parents[1]
EVAL = EvalParams(final_steps=4, tasks=10, pretrain_steps=10, scratch_steps=5)
RECSYS_METHODS = {"global mean", "item mean", "user support mean", "pooled model", "pooled model + fine-tune", "MF fold-in"}
CLINICAL_METHODS = {"lr-support", "lr-pooled", "gbm-pooled", "lr-pooled-finetuned"}


def _run(collection: str, options: dict, algorithm: str, data_dir: Path, transfer_tasks: int, **domain_options):
    """The pipeline as ``metaauto pipeline --collection COLLECTION`` builds it (same defaults), tiny budgets."""
    defaults = pipeline_defaults(collection, options)
    data = CollectionParams(collection=collection, data_dir=str(data_dir), options=defaults["options"],
                            ways=defaults["ways"] or 5, shots=defaults["shots"], queries=defaults["queries"])
    name = default_model_name(collection, defaults["options"], data.ways, data.shots)
    experiment = f"transfer-{name}-{uuid.uuid4().hex[:6]}"
    params = PipelineParams(
        data=data,
        search=SearchParams(trials=1, algorithms=[algorithm], max_steps=4, val_every=2, val_tasks=5, pruner="none",
                            study_name=f"{name}-{uuid.uuid4().hex[:6]}"),
        evaluation=EVAL.model_copy(update={"register_as": name}),
        transfer=TransferParams(model_uri=f"models:/{name}@champion", target=data, tasks=transfer_tasks,
                                domain_options=domain_options),
        experiment=experiment,
    )
    return name, params, meta_pipeline(params)


@pytest.fixture(scope="module")
def ml_subset(data_dir, tmp_path_factory) -> Path:
    """The real ml-latest-small, cut to its first 200 users (all their ratings) to keep the file short."""
    import pandas as pd

    source = data_dir / "movielens" / "ml-latest-small"
    subset = tmp_path_factory.mktemp("ml-subset")
    ratings = pd.read_csv(source / "ratings.csv")
    ratings[ratings["userId"] <= 200].to_csv(subset / "ratings.csv", index=False)
    for name in ("movies.csv", "tags.csv"):
        (subset / name).write_bytes((source / name).read_bytes())
    return subset


@pytest.fixture(scope="module")
def movielens(harness, data_dir, ml_subset):
    return _run("movielens", {"path": str(ml_subset)}, "anil", data_dir, 25, pooled_epochs=1, mf_iterations=3)


def test_item_factor_features_ignore_meta_test_ratings(ml_subset, tmp_path):
    """``item_factors`` (the collaborative features the benchmark uses) come from meta-train users only:
    rewriting every meta-test user's ratings changes no feature of any row."""
    import numpy as np
    import pandas as pd

    from metaauto.errors import CollectionError
    from metaauto.tasks.movielens import MovieLensCollection

    base = MovieLensCollection(path=ml_subset, item_factors=3)
    test_users = set(base.tasks_of("test"))
    ratings = pd.read_csv(ml_subset / "ratings.csv")
    flipped = ratings["userId"].isin(test_users)
    ratings.loc[flipped, "rating"] = 5.5 - ratings.loc[flipped, "rating"]
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    for name in ("movies.csv", "tags.csv"):
        (tmp_path / name).write_bytes((ml_subset / name).read_bytes())
    other = MovieLensCollection(path=tmp_path, item_factors=3)
    assert [c for c in base.feature_cols if c.startswith("f_mf")] == ["f_mf0", "f_mf1", "f_mf2", "f_mf_bias"]
    np.testing.assert_array_equal(base._x, other._x)
    assert not np.array_equal(base._y, other._y)  # the labels did change
    with pytest.raises(CollectionError, match="item_factors"):
        MovieLensCollection(path=ml_subset, item_factors=-1)


def test_pipeline_defaults_name_each_domain_and_table():
    assert default_model_name("movielens", {}, None, 10) == "movielens-coldstart"
    assert default_model_name("heart-disease", {"target_site": "va"}, 2, 5) == "heart-disease-va"
    assert default_model_name("data/my.csv", {}, 2, 5) == "my-2w5s"
    assert pipeline_defaults("heart-disease", {"target_site": "cleveland"})["options"]["val_site"] == "hungary"
    assert pipeline_defaults("heart-disease", {"val_site": "va"})["options"] == {"val_site": "va"}
    assert pipeline_defaults("my.csv", {"task_col": "clinic"}) == {"options": {"task_col": "clinic"}}


@pytest.fixture(scope="module")
def heart(harness, data_dir):
    return _run("heart-disease", {"target_site": "switzerland"}, "protonet", data_dir, 20)


def _check_run(result: dict, params: PipelineParams, metrics: list[str], baselines: set[str]) -> dict:
    """The transfer's MLflow run holds every reported number; the verdict matches the rows."""
    from metaauto.evaluation.domains import metric_key, method_key
    from metaauto.tracking import get_client

    transfer = result.transfer
    rows = {r["method"]: r for r in transfer["results"]}
    ours = result.search.best_params["algorithm"]
    assert set(rows) == {ours} | baselines and transfer["results"][0]["method"] == ours
    run = get_client().get_run(transfer["run_id"])
    assert run.data.tags["metaauto.kind"] == "transfer" and run.data.tags["domain"] == transfer["domain"]
    for m in metrics:
        key = metric_key(m)
        assert run.data.metrics[f"transfer/{key}"] == pytest.approx(rows[ours][m])
        for b in baselines:
            assert run.data.metrics[f"transfer/baseline/{method_key(b)}/{key}"] == pytest.approx(rows[b][m])
        higher = m not in ("mae", "rmse")
        best = (max if higher else min)(rows[b][m] for b in baselines)
        wins = rows[ours][m] > best if higher else rows[ours][m] < best
        assert transfer["beats_best_baseline"][m] == wins
        assert run.data.metrics[f"transfer/beats_best_baseline/{key}"] == float(wins)
        assert all(math.isfinite(r[m]) and r[m + "_ci95"] >= 0 for r in rows.values())
    return rows


def test_movielens_pipeline_registers_coldstart_champion_and_scores_recsys_baselines(movielens):
    from metaauto.tracking import get_client

    name, params, result = movielens
    assert name == "movielens-coldstart" and result.evaluation.final.version.name == name
    assert get_client().get_model_version_by_alias(name, "champion").version == result.evaluation.final.version.version
    transfer = result.transfer
    assert transfer["domain"] == "movielens" and transfer["shots"] == 10 and transfer["units"] == 25
    rows = _check_run(result, params, ["mae", "rmse", "ndcg@10"], RECSYS_METHODS)
    for r in rows.values():
        assert 0 < r["mae"] <= r["rmse"] < 4.5 and 0 < r["ndcg@10"] <= 1
    # the two constant predictors rank every user's items by the same tie-break: same users, same draws
    assert rows["global mean"]["ndcg@10"] == pytest.approx(rows["user support mean"]["ndcg@10"])
    # baselines that use other users' ratings beat a constant on ranking
    assert rows["item mean"]["ndcg@10"] > rows["global mean"]["ndcg@10"]


def test_heart_pipeline_registers_site_champion_and_scores_clinical_baselines(heart):
    name, params, result = heart
    assert name == "heart-disease-switzerland" and result.evaluation.final.version.name == name
    assert params.data.options == {"target_site": "switzerland", "val_site": "cleveland"}
    transfer = result.transfer
    assert transfer["domain"] == "heart-disease" and transfer["target"] == "site switzerland" and transfer["units"] == 20
    rows = _check_run(result, params, ["auroc", "balanced_accuracy"], CLINICAL_METHODS)
    assert all(0 <= r["auroc"] <= 1 and 0 <= r["balanced_accuracy"] <= 1 for r in rows.values())
    # pooled models ignore the support set: the same predictions in every draw, so no spread over draws
    assert rows["lr-pooled"]["auroc_ci95"] < rows["lr-support"]["auroc_ci95"]


def test_transfer_artifacts_show_the_table_and_the_verdict(movielens, heart):
    found = read_artifacts(["transfer-movielens", "transfer-table-movielens-k10", "transfer-heart-disease",
                        "transfer-table-heart-disease-k5"])
    assert set(found) == {"transfer-movielens", "transfer-table-movielens-k10", "transfer-heart-disease",
                          "transfer-table-heart-disease-k5"}
    assert "MF fold-in" in found["transfer-movielens"]["data"] and "best baseline" in found["transfer-movielens"]["data"]
    assert "not a clinical tool" in found["transfer-heart-disease"]["data"]
    assert "gbm-pooled" in str(found["transfer-table-heart-disease-k5"]["data"])


def test_transfer_refuses_a_site_the_champion_was_trained_on(heart, data_dir):
    name, params, _ = heart
    # hungary was a training site of heart-disease-switzerland: not a new site for it
    target = params.data.model_copy(update={"options": {"target_site": "hungary", "val_site": "cleveland"}})
    with pytest.raises(DomainTransferError, match="fingerprint"):
        transfer_to_domain(TransferParams(model_uri=f"models:/{name}@champion", target=target, tasks=5),
                           experiment=params.experiment)
    # Switzerland has 8 patients without disease: 10-shot leaves none to evaluate on
    with pytest.raises(DomainTransferError, match="smaller K"):
        transfer_to_domain(TransferParams(model_uri=f"models:/{name}@champion",
                                          target=params.data.model_copy(update={"shots": 10}), tasks=5),
                           experiment=params.experiment)


def test_own_csv_goes_through_the_pipeline_command(harness, tmp_path):
    from typer.testing import CliRunner

    from metaauto.cli import app

    name = f"clinics-{uuid.uuid4().hex[:6]}"
    result = CliRunner().invoke(app, [
        "pipeline", "--collection", str(REPO / "examples" / "clinics.csv"), "-o", "task_col=clinic", "-o", "label_col=outcome",
        "--ways", "2", "--shots", "5", "--queries", "5", "--algorithms", "protonet", "--trials", "1", "--budget-steps", "4",
        "--val-tasks", "5", "--final-steps", "4", "--eval-tasks", "10", "--pretrain-steps", "10", "--register", name,
        "--study", name, "--experiment", f"csv-{name}"])
    assert result.exit_code == 0, result.output
    assert f"models:/{name}@champion" in result.output and "meta-test accuracy" in result.output


def test_bad_domain_option_fails_with_the_loader_message(harness, data_dir):
    from metaauto.errors import CollectionError

    from flows import ingest_collection

    with pytest.raises(CollectionError, match="unknown target_site 'mars'"):
        ingest_collection(CollectionParams(collection="heart-disease", data_dir=str(data_dir),
                                           options={"target_site": "mars"}, ways=2, shots=5, queries=3))
