"""Heart-disease leave-one-site-out collection and the clinical transfer evaluation, on the real UCI files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from metaauto.errors import CollectionError
from metaauto.evaluation.clinical import (
    ClinicalEvaluationError,
    MetaLearned,
    baseline_methods,
    draw_support,
    evaluate_transfer,
    meta_train_learner,
)
from metaauto.tasks.heart_disease import SITES, HeartDiseaseCollection
from metaauto.tasks.catalog import load_collection


@pytest.fixture(scope="module")
def heart_dir(data_dir):
    return data_dir / "heart-disease"


@pytest.mark.parametrize("target", list(SITES))
def test_splits_never_share_sites(heart_dir, target):
    collection = load_collection("heart-disease", data_dir=heart_dir, target_site=target, too_small="skip")
    train, test = collection.tasks_of("train"), collection.tasks_of("test")
    assert test == [target]
    assert sorted(train) == sorted(s for s in SITES if s != target)
    assert not set(train) & set(test)
    train_x, _ = collection.split_data("train")
    site_x, site_y = collection.site_data(target)
    assert len(train_x) + len(site_x) == 920  # 303 + 294 + 123 + 200 patients
    assert np.isfinite(train_x).all() and np.isfinite(site_x).all()
    batch = collection.sample("train", ways=2, shots=5, queries=3, tasks=8, seed=1)
    assert batch.support_x.shape == (8, 10, len(collection.feature_cols))


def test_val_site_is_its_own_split(heart_dir):
    collection = HeartDiseaseCollection(heart_dir, target_site="va", val_site="cleveland")
    assert collection.tasks_of("val") == ["cleveland"]
    assert sorted(collection.tasks_of("train")) == ["hungary", "switzerland"]
    with pytest.raises(CollectionError, match="val_site"):
        HeartDiseaseCollection(heart_dir, target_site="va", val_site="va")
    with pytest.raises(CollectionError, match="target_site"):
        HeartDiseaseCollection(heart_dir, target_site="mars")


def test_target_site_values_do_not_change_fitted_statistics(heart_dir, tmp_path):
    """Rewriting every number of the held-out site leaves medians and standardisation untouched."""
    for name in SITES.values():
        shutil.copy(heart_dir / name, tmp_path / name)
    before = HeartDiseaseCollection(tmp_path, target_site="switzerland").fitted_statistics()
    swiss = tmp_path / SITES["switzerland"]
    lines = []
    for line in swiss.read_text().splitlines():
        fields = line.split(",")
        fields = [f if f == "?" else str(float(f) * 3 + 7) for f in fields[:-1]] + [fields[-1]]
        lines.append(",".join(fields))
    swiss.write_text("\n".join(lines) + "\n")
    changed = HeartDiseaseCollection(tmp_path, target_site="switzerland")
    after = changed.fitted_statistics()
    assert after["medians"] == before["medians"]
    np.testing.assert_array_equal(after["mean"], before["mean"])
    np.testing.assert_array_equal(after["std"], before["std"])
    # ...while the held-out site's own features did change (the rewrite took effect)
    original = HeartDiseaseCollection(heart_dir, target_site="switzerland")
    assert not np.allclose(original.site_data("switzerland")[0], changed.site_data("switzerland")[0])
    # and a training site's values do move the statistics (the check can fail)
    moved = HeartDiseaseCollection(tmp_path, target_site="cleveland").fitted_statistics()
    assert moved["medians"] != HeartDiseaseCollection(heart_dir, target_site="cleveland").fitted_statistics()["medians"]


def test_bad_files_name_file_line_and_column(heart_dir, tmp_path):
    for name in SITES.values():
        shutil.copy(heart_dir / name, tmp_path / name)
    va = tmp_path / SITES["va"]
    lines = va.read_text().splitlines()
    lines[2] = lines[2].replace("132", "abc", 1)
    va.write_text("\n".join(lines) + "\n")
    with pytest.raises(CollectionError, match=r"processed\.va\.data, line 3, column 'trestbps': 'abc'"):
        HeartDiseaseCollection(tmp_path)
    lines[2] = "60,1,4"
    va.write_text("\n".join(lines) + "\n")
    with pytest.raises(CollectionError, match=r"processed\.va\.data, line 3: expected 14"):
        HeartDiseaseCollection(tmp_path)
    va.unlink()
    with pytest.raises(CollectionError, match=r"processed\.va\.data not found"):
        HeartDiseaseCollection(tmp_path)


def test_support_draws_are_balanced_and_disjoint_from_query():
    y = np.array([0] * 8 + [1] * 115)
    support, query = draw_support(y, 5, np.random.default_rng(0))
    assert (y[support] == 0).sum() == 5 and (y[support] == 1).sum() == 5
    assert not set(support) & set(query) and len(support) + len(query) == len(y)
    with pytest.raises(ClinicalEvaluationError, match="class 0 has 8 patients"):
        draw_support(y, 10, np.random.default_rng(0), "switzerland")


def test_small_end_to_end_transfer(heart_dir, single_thread):
    collection = load_collection("heart-disease", data_dir=heart_dir, target_site="cleveland", too_small="skip")
    train_x, train_y = collection.split_data("train")
    site_x, site_y = collection.site_data("cleveland")
    methods = [m.fit(train_x, train_y.ravel()) for m in baseline_methods()]
    learner = meta_train_learner(collection, "protonet", meta_steps=20, meta_batch_size=4, hidden=(16,))
    methods.append(MetaLearned("protonet", learner))
    result = evaluate_transfer(methods, site_x, site_y, shots=5, draws=3, site="cleveland")
    summary = result.summary()
    assert set(summary) == {"lr-support", "lr-pooled", "gbm-pooled", "lr-pooled-finetuned", "protonet"}
    for row in summary.values():
        assert 0.0 <= row["auroc"] <= 1.0 and 0.0 <= row["balanced_accuracy"] <= 1.0
    # Cleveland is an easy site for a model pooled over the others; a broken pipeline would sit near 0.5
    assert summary["lr-pooled"]["auroc"] > 0.75
    assert summary["protonet"]["auroc"] > 0.6
    # pooled models ignore the support set; support-only and fine-tuned models depend on it
    by_name = {m.name: m for m in methods}
    rng = np.random.default_rng(3)
    (a, _), (b, _) = draw_support(site_y.ravel(), 5, rng), draw_support(site_y.ravel(), 5, rng)
    probe = site_x[:20]
    for name, same in (("lr-pooled", True), ("lr-support", False), ("lr-pooled-finetuned", False)):
        pa = by_name[name].predict_proba(site_x[a], site_y.ravel()[a], probe)
        pb = by_name[name].predict_proba(site_x[b], site_y.ravel()[b], probe)
        assert np.allclose(pa, pb) == same, name
