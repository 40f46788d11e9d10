"""The learner registry: names, families, published defaults, and option validation."""

from __future__ import annotations

import json

import pytest
import torch

from metaauto.backbones import make_backbone
from metaauto.errors import LearnerError
from metaauto.learners import LEARNERS, available_learners, learner_defaults, make_learner

ALL = ("maml", "fomaml", "reptile", "metasgd", "anil", "protonet", "matchingnet", "relationnet")


def model_for(name: str) -> torch.nn.Module:
    return make_backbone("mlp", (4,), None if LEARNERS[name].family == "metric" else 3, hidden=(6,))


def test_every_algorithm_is_registered_with_its_family_and_task_types():
    assert tuple(available_learners()) == ALL
    assert available_learners("regression") == ["maml", "fomaml", "reptile", "metasgd", "anil"]
    assert available_learners("classification") == list(ALL)
    for name in ALL:
        cls = LEARNERS[name]
        assert cls.name == name
        assert cls.family == ("metric" if name in ("protonet", "matchingnet", "relationnet") else "gradient")
        assert ("regression" in cls.task_types) == (cls.family == "gradient")


def test_unknown_task_type_is_refused():
    with pytest.raises(LearnerError, match="unknown task type 'ranking'"):
        available_learners("ranking")


def test_published_defaults():
    assert learner_defaults("maml") == {"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3, "first_order": False}
    assert learner_defaults("metasgd")["inner_lr"] == [0.005, 0.1]
    assert learner_defaults("reptile")["inner_steps"] == 5 and learner_defaults("reptile")["eval_inner_steps"] == 50
    assert learner_defaults("protonet") == {"distance": "euclidean"}
    assert learner_defaults("relationnet") == {"hidden": 8}
    defaults = learner_defaults("maml")
    defaults["inner_lr"] = 1.0
    assert learner_defaults("maml")["inner_lr"] == 0.4  # a copy, not the registry's own dict


@pytest.mark.parametrize("name", ALL)
def test_make_learner_starts_from_the_defaults_and_hparams_rebuild_it(name):
    learner = make_learner(name, model_for(name))
    hparams = learner.hparams()
    assert json.loads(json.dumps(hparams)) == hparams
    for key, value in learner_defaults(name).items():
        assert hparams[key] == value
    rebuilt = make_learner(name, model_for(name), **hparams)
    assert type(rebuilt) is type(learner) and rebuilt.hparams() == hparams


def test_configurations_pin_their_defining_option():
    model = model_for("maml")
    assert make_learner("fomaml", model).first_order is True
    assert make_learner("reptile", model).outer == "reptile"
    assert make_learner("metasgd", model).learn_inner_lr is True
    assert make_learner("anil", model).adapted_names == ("head.weight", "head.bias")
    # the open "maml" configuration can express the others
    assert make_learner("maml", model, adapt="head", first_order=True).adapted_names == ("head.weight", "head.bias")
    with pytest.raises(LearnerError, match="learner 'fomaml' has no option\\(s\\) first_order"):
        make_learner("fomaml", model, first_order=False)


def test_unknown_learner_lists_the_known_ones():
    with pytest.raises(LearnerError, match="unknown learner 'mamal'; known learners: maml, fomaml, reptile, metasgd"):
        make_learner("mamal", model_for("maml"))
    with pytest.raises(LearnerError, match="unknown learner"):
        learner_defaults("nope")


def test_unknown_option_and_non_module_model_are_refused():
    with pytest.raises(LearnerError, match="learner 'maml' has no option\\(s\\) lr; its options are: inner_lr"):
        make_learner("maml", model_for("maml"), lr=0.1)
    with pytest.raises(LearnerError, match="learner 'matchingnet' has no option\\(s\\) distance; its options are: vectorize"):
        make_learner("matchingnet", model_for("matchingnet"), distance="cosine")
    with pytest.raises(LearnerError, match="wraps a torch.nn.Module, got dict"):
        make_learner("protonet", {})


def test_regression_defaults_follow_the_sinusoid_paper_not_omniglot():
    assert learner_defaults("maml", "regression") == {
        "inner_lr": 0.01, "inner_steps": 1, "eval_inner_steps": 10, "first_order": False,
    }
    assert learner_defaults("maml") == learner_defaults("maml", "classification")
    assert learner_defaults("reptile", "regression")["inner_steps"] == 5
    assert learner_defaults("protonet", "regression") == learner_defaults("protonet")
    with pytest.raises(LearnerError, match="unknown task type 'ranking'"):
        learner_defaults("maml", "ranking")
