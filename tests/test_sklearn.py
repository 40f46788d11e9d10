"""metaauto.load and the scikit-learn wrappers: a registered model adapts to a new Omniglot task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import _mlflow_support as support
import metaauto
from metaauto.tracking.promotion import promote, register
from metaauto.downstream.sklearn import FewShotClassifier, FewShotRegressor

NAME = "omniglot-5w1s"


@pytest.fixture(scope="module")
def champion_uri(data_dir: Path) -> str:
    from metaauto.tracking import get_client

    client = get_client(support.store_uri())
    strong = support.strong(str(data_dir))
    version = register(NAME, strong.model.model_id, client=client)
    promote(NAME, version.version, client=client)
    return f"models:/{NAME}@champion"


@pytest.fixture(scope="module")
def episode(data_dir: Path):
    """A meta-test episode as flat arrays, with string labels as a user would have."""
    batch = support.omniglot(str(data_dir)).sample("test", 5, 1, 15, tasks=1, seed=123)
    names = np.array(["alpha", "beta", "gamma", "delta", "epsilon"])
    X_s = batch.support_x[0].reshape(5, -1).numpy()
    X_q = batch.query_x[0].reshape(75, -1).numpy()
    return X_s, names[batch.support_y[0].numpy()], X_q, names[batch.query_y[0].numpy()]


def test_load_adapts_on_a_meta_test_episode_and_beats_chance(champion_uri, episode) -> None:
    X_s, y_s, X_q, y_q = episode
    model = metaauto.load(champion_uri)
    assert model.learner.name == "protonet" and model.n_features_in == 784
    clf = model.adapt(X_s, y_s)
    assert list(clf.classes_) == sorted(set(y_s))
    proba = clf.predict_proba(X_q)
    assert proba.shape == (75, 5) and np.allclose(proba.sum(axis=1), 1.0)
    assert clf.score(X_q, y_q) > 0.5  # chance is 0.2


def test_runs_uri_and_local_directory_load_the_same_model(data_dir: Path, episode, tmp_path: Path) -> None:
    from metaauto.tracking.uris import download_model

    strong = support.strong(str(data_dir))
    X_s, y_s, X_q, _ = episode
    by_run = metaauto.load(strong.model.run_uri).adapt(X_s, y_s).predict_proba(X_q)
    local = download_model(strong.model.run_uri, dst=tmp_path)
    by_dir = metaauto.load(local).adapt(X_s, y_s).predict_proba(X_q)
    np.testing.assert_allclose(by_run, by_dir, rtol=1e-5, atol=1e-6)


def test_classifier_follows_estimator_conventions(champion_uri, episode) -> None:
    X_s, y_s, X_q, y_q = episode
    clf = FewShotClassifier(model_uri=champion_uri)
    assert clf.get_params() == {"model_uri": champion_uri, "inner_steps": None, "model": None, "tracking_uri": None}
    assert clf.set_params(inner_steps=3).inner_steps == 3
    fitted = clf.fit(X_s, y_s)
    copy = clone(fitted)
    assert not hasattr(copy, "classes_") and copy.get_params()["model_uri"] == champion_uri
    assert fitted.n_features_in_ == 784
    pipe = make_pipeline(FunctionTransformer(lambda X: np.clip(X, 0, 1)), FewShotClassifier(model_uri=champion_uri))
    assert pipe.fit(X_s, y_s).score(X_q, y_q) > 0.5
    # cross-validation over a labelled pool: each fold's training part is a support set
    X = np.concatenate([X_s, X_q[:20]])
    y = np.concatenate([y_s, y_q[:20]])
    assert cross_val_score(FewShotClassifier(model_uri=champion_uri), X, y, cv=3).mean() > 0.5


def test_classifier_validates_its_input(champion_uri, episode) -> None:
    X_s, y_s, X_q, _ = episode
    with pytest.raises(ValueError, match="784"):
        FewShotClassifier(model_uri=champion_uri).fit(X_s[:, :100], y_s)
    bad = X_s.copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FewShotClassifier(model_uri=champion_uri).fit(bad, y_s)
    with pytest.raises(ValueError, match="at least 2"):
        FewShotClassifier(model_uri=champion_uri).fit(X_s, ["same"] * 5)
    clf = FewShotClassifier(model_uri=champion_uri).fit(X_s, y_s)
    with pytest.raises(ValueError, match="784 features"):
        clf.predict(X_q[:, :10])
    with pytest.raises(ValueError, match="regression"):
        FewShotRegressor(model_uri=champion_uri).fit(X_s, np.arange(5.0))
    with pytest.raises(ValueError, match="exactly one"):
        FewShotClassifier().fit(X_s, y_s)


def test_the_downstream_example_runs_against_the_champion(champion_uri, data_dir: Path) -> None:
    """examples/downstream.py is what the README points users to: it must keep working."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(support.REPO / "examples" / "downstream.py"), "--model", champion_uri,
         "--data-dir", str(data_dir)],
        env=support.subprocess_env(MLFLOW_TRACKING_URI=support.store_uri()), capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("accuracy on 75 queries: ")[1].split()[0])
    assert accuracy > 0.5  # chance is 0.2
