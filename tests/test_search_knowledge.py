"""Warm start across collections: finished studies are recorded by meta-features and seed similar new ones."""

from __future__ import annotations

import math
import threading
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from metaauto.search import Budget, SearchSpace, run_search
from metaauto.search.knowledge import WARM_ATTR, KnowledgeBase, distance, fit_to_space, meta_features

optuna.logging.set_verbosity(optuna.logging.WARNING)
TINY = Budget(max_steps=4, val_every=2, val_tasks=5)
ALGOS = ["fomaml", "reptile"]


@pytest.fixture(scope="module")
def sinusoid(single_thread):
    from metaauto.tasks import load_collection

    return load_collection("sinusoid")


@pytest.fixture(scope="module")
def first(sinusoid, tmp_path_factory):
    """A finished 5-shot study whose meta_lr range excludes the published 1e-3, so its best is no default elsewhere."""
    root = tmp_path_factory.mktemp("knowledge")
    kb = KnowledgeBase(root / "knowledge.db")
    # a classification entry must never be borrowed by a regression study, however close it is
    kb.record("omniglot-like", {**meta_features(sinusoid, None, 5), "task_type": "classification"},
              {"algorithm": "fomaml", "fomaml.inner_lr": 0.5, "fomaml.inner_steps": 1, "meta_lr": 1e-3,
               "meta_batch_size": 2, "backbone.width": 40}, 99.0)
    name = f"sin5-{uuid.uuid4().hex[:8]}"
    result = run_search(sinusoid, shots=5, queries=10, trials=2, algorithms=ALGOS, budget=TINY, pruner="none",
                        study_name=name, overrides={"meta_lr": {"low": 2e-3, "high": 5e-3}}, track=False,
                        storage=f"sqlite:///{root / 'optuna.db'}", knowledge=kb)
    return root, kb, name, result


def _warm(study: optuna.Study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if str(t.user_attrs.get("enqueued", "")).startswith("warm start")]


def test_finished_study_is_recorded_with_meta_features(first, sinusoid):
    _, kb, name, result = first
    (entry,) = [e for e in kb.entries("regression") if e.study == name]
    assert entry.best_params == result.best_params and entry.best_value == pytest.approx(result.best_value)
    assert entry.features["task_type"] == "regression" and entry.features["shots"] == 5.0
    assert entry.features["input_dims"] == 1.0 and math.isfinite(entry.features["y.std"])
    assert [e.study for e in kb.entries("classification")] == ["omniglot-like"]


def test_similar_collection_gets_the_past_best_enqueued_after_the_defaults(first, sinusoid):
    root, kb, name, result = first
    second = f"sin10-{uuid.uuid4().hex[:8]}"
    out = run_search(sinusoid, shots=10, queries=10, trials=3, algorithms=ALGOS, budget=TINY, pruner="none",
                     study_name=second, track=False, storage=f"sqlite:///{root / 'optuna.db'}", knowledge=kb)
    study = optuna.load_study(study_name=second, storage=out.storage)
    (warm,) = _warm(study)
    assert warm.number == len(ALGOS)  # right after the published defaults
    assert warm.user_attrs["enqueued"] == f"warm start from study {name}"
    assert warm.params == result.best_params and warm.state != TrialState.WAITING
    assert [b["study"] for b in study.user_attrs[WARM_ATTR]] == [name]


def test_warm_start_respects_fixed_parameters_allowed_algorithms_and_the_flag(first, sinusoid):
    root, kb, name, result = first
    storage = f"sqlite:///{root / 'optuna.db'}"
    best_algorithm = result.best_params["algorithm"]
    other = next(a for a in ALGOS if a != best_algorithm)
    common = dict(shots=10, queries=10, trials=0, budget=TINY, pruner="none", track=False, storage=storage, knowledge=kb)

    fixed = f"sin-fixed-{uuid.uuid4().hex[:8]}"
    run_search(sinusoid, algorithms=ALGOS, study_name=fixed, overrides={"meta_batch_size": 3}, **common)
    (warm,) = _warm(optuna.load_study(study_name=fixed, storage=storage))
    assert warm.system_attrs["fixed_params"] == {**result.best_params, "meta_batch_size": 3}

    narrowed = f"sin-other-{uuid.uuid4().hex[:8]}"
    run_search(sinusoid, algorithms=[other], study_name=narrowed, **common)
    assert _warm(optuna.load_study(study_name=narrowed, storage=storage)) == []

    off = f"sin-off-{uuid.uuid4().hex[:8]}"
    run_search(sinusoid, algorithms=ALGOS, study_name=off, warm_start=False, **common)
    assert _warm(optuna.load_study(study_name=off, storage=storage)) == []


def test_nearest_uses_normalised_distance_within_the_task_type(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.db")
    base = {"task_type": "classification", "ways": 5.0, "shots": 1.0, "input_dims": 784.0}
    params = {"algorithm": "protonet"}
    kb.record("near", {**base, "shots": 2.0}, params, 0.9)
    kb.record("far", {**base, "ways": 20.0, "input_dims": 13.0}, params, 0.95)
    kb.record("regression", {**base, "task_type": "regression"}, params, 1.0)
    assert [e.study for e in kb.nearest(base, k=5)] == ["near", "far"]
    assert [e.study for e in kb.nearest(base, k=1)] == ["near"]
    assert distance(base, base) == 0.0 and distance(base, {**base, "task_type": "regression"}) == math.inf
    assert 0 < distance(base, {**base, "input_dims": 785.0}) < distance(base, {**base, "shots": 5.0}) <= 1


def test_out_of_range_configurations_are_not_enqueued():
    space = SearchSpace("regression", "mlp", ["fomaml"], {"fomaml.inner_lr": {"low": 0.01, "high": 0.02}})
    good = space.defaults("fomaml")
    assert fit_to_space(space, good) == good
    assert fit_to_space(space, {**good, "fomaml.inner_lr": 0.5}) is None
    assert fit_to_space(space, {**good, "algorithm": "maml"}) is None


def test_concurrent_writers_all_land(tmp_path):
    path = tmp_path / "kb.db"
    KnowledgeBase(path)
    errors = []

    def write(worker: int) -> None:
        try:
            kb = KnowledgeBase(path)
            for i in range(10):
                kb.record(f"w{worker}-{i}", {"task_type": "regression", "shots": float(i)}, {"algorithm": "maml"}, float(i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(KnowledgeBase(path).entries()) == 60
