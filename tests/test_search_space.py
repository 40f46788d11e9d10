"""The conditional search space: published defaults, define-by-run draws, and the user's overrides."""

from __future__ import annotations

import json

import optuna
import pytest

from metaauto.learners import learner_defaults
from metaauto.search import SearchError, SearchSpace, load_overrides, parse_overrides

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _draw(space: SearchSpace, n: int, seed: int = 0) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")
    study.optimize(lambda t: (space.suggest(t), 0.0)[1], n_trials=n)
    return study.trials


def test_defaults_are_the_published_configurations():
    space = SearchSpace("regression", "mlp")
    assert space.algorithms == ["maml", "fomaml", "reptile", "metasgd", "anil"]
    maml = space.candidate(space.defaults("maml"))
    assert maml.hparams == learner_defaults("maml", "regression")  # inner_lr 0.01, Finn et al. sinusoid
    assert (maml.meta_lr, maml.meta_batch_size, maml.width) == (1e-3, 25, 40)
    assert space.candidate(space.defaults("reptile")).meta_batch_size == 5

    images = SearchSpace("classification", "conv4")
    assert "protonet" in images.algorithms and images.defaults("protonet")["protonet.distance"] == "euclidean"
    metasgd = images.candidate(images.defaults("metasgd"))
    assert metasgd.hparams["inner_lr"] == pytest.approx([0.005, 0.1])  # Li et al. 2017's uniform draw
    assert images.candidate(images.defaults("maml")).hparams["inner_lr"] == 0.4
    assert images.defaults("maml")["backbone.width"] == 64
    assert images.candidate(images.defaults("protonet")).meta_batch_size == 1


def test_draws_are_conditional_on_the_algorithm():
    space = SearchSpace("classification", "conv4", algorithms=["maml", "protonet", "relationnet"])
    trials = _draw(space, 30)
    seen = set()
    for trial in trials:
        algorithm = trial.params["algorithm"]
        seen.add(algorithm)
        own = {k for k in trial.params if "." in k and not k.startswith("backbone.")}
        assert own and all(k.startswith(algorithm + ".") for k in own)
        assert {"meta_lr", "meta_batch_size", "backbone.width"} <= set(trial.params)
        assert 1e-4 <= trial.params["meta_lr"] <= 1e-2
    assert seen == {"maml", "protonet", "relationnet"}


def test_fixed_and_narrowed_parameters_are_respected():
    overrides = parse_overrides(["maml.inner_lr=0.1", "meta_lr=0.0005:0.002", "algorithm=maml,reptile",
                                 "maml.first_order=true", "reptile.inner_steps=2,3"])
    assert overrides["meta_lr"] == {"low": 0.0005, "high": 0.002}
    space = SearchSpace("regression", "mlp", overrides=overrides)
    assert space.algorithms == ["maml", "reptile"]
    for trial in _draw(space, 25):
        p = trial.params
        assert 0.0005 <= p["meta_lr"] <= 0.002
        if p["algorithm"] == "maml":
            assert p["maml.inner_lr"] == 0.1 and p["maml.first_order"] is True
        else:
            assert p["reptile.inner_steps"] in (2, 3)
    # the enqueued defaults move inside the narrowed space
    defaults = space.defaults("reptile")
    assert defaults["meta_lr"] == 1e-3 and defaults["reptile.inner_steps"] == 2
    assert space.defaults("maml")["maml.first_order"] is True


def test_config_file_overrides(tmp_path):
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text("maml:\n  inner_lr: 0.2\n  inner_steps: [1, 2]\nmeta_lr: {low: 0.0001, high: 0.001}\n")
    assert load_overrides(yaml_file) == {"maml.inner_lr": 0.2, "maml.inner_steps": [1, 2],
                                         "meta_lr": {"low": 0.0001, "high": 0.001}}
    json_file = tmp_path / "space.json"
    json_file.write_text(json.dumps({"protonet.distance": "cosine"}))
    space = SearchSpace("classification", "conv4", ["protonet"], load_overrides(json_file))
    assert space.params["protonet.distance"].choices == ("cosine",)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(SearchError, match="bad.yaml"):
        load_overrides(bad)


@pytest.mark.parametrize(
    "algorithms, overrides, match",
    [
        (None, {"maml.inner_rate": 0.1}, "no searched parameter named maml.inner_rate"),
        (["maml"], {"protonet.distance": "cosine"}, "protonet.distance"),
        (["protonet"], {"protonet.distance": "manhattan"}, "must be one of"),
        (["protonet"], {"meta_lr": {"low": 0.0, "high": 1e-3}}, "log scale"),
        (["protonet"], {"meta_lr": {"low": 1e-2, "high": 1e-3}}, "low"),
        (["maml"], {"maml.inner_steps": 1.5}, "integers"),
        (["maml", "flymaml"], {}, "unknown algorithm"),
    ],
)
def test_bad_spaces_are_refused(algorithms, overrides, match):
    with pytest.raises(SearchError, match=match):
        SearchSpace("classification", "conv4", algorithms, overrides)


def test_regression_refuses_metric_learners_and_bad_set_syntax():
    with pytest.raises(SearchError, match="cannot solve regression"):
        SearchSpace("regression", "mlp", ["protonet"])
    with pytest.raises(SearchError, match="NAME=VALUE"):
        parse_overrides(["maml.inner_lr"])
