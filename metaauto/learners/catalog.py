"""Learners by name, with their published Omniglot configurations.

``learner_defaults(name)`` returns the options the algorithm's paper used on Omniglot (the source is
documented next to each class's ``defaults``); ``make_learner(name, model)`` starts from them, so
``make_learner(name, model, **overrides)`` only needs the options that differ.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from metaauto.errors import LearnerError
from metaauto.learners.base import Learner
from metaauto.learners.gradient import ANIL, FOMAML, GradientLearner, MetaSGD, Reptile
from metaauto.learners.metric import MatchingNet, ProtoNet, RelationNet

LEARNERS: dict[str, type[Learner]] = {
    cls.name: cls for cls in (GradientLearner, FOMAML, Reptile, MetaSGD, ANIL, ProtoNet, MatchingNet, RelationNet)
}

TASK_TYPES = ("classification", "regression")


def _learner_class(name: str) -> type[Learner]:
    try:
        return LEARNERS[name]
    except KeyError:
        raise LearnerError(f"unknown learner {name!r}; known learners: {', '.join(LEARNERS)}") from None


def available_learners(task_type: str | None = None) -> list[str]:
    """Registered learner names, optionally only those that solve ``task_type`` tasks."""
    if task_type is None:
        return list(LEARNERS)
    if task_type not in TASK_TYPES:
        raise LearnerError(f"unknown task type {task_type!r}; expected one of {', '.join(TASK_TYPES)}")
    return [name for name, cls in LEARNERS.items() if task_type in cls.task_types]


def learner_defaults(name: str, task_type: str = "classification") -> dict[str, Any]:
    """The published configuration of a learner, as ``make_learner`` keyword arguments.

    Classification: the Omniglot configuration of the learner's paper. Regression: the sinusoid
    configuration of Finn et al. 2017 (``regression_defaults``) over it, for gradient learners.
    """
    cls = _learner_class(name)
    if task_type not in TASK_TYPES:
        raise LearnerError(f"unknown task type {task_type!r}; expected one of {', '.join(TASK_TYPES)}")
    defaults = dict(cls.defaults)
    if task_type == "regression":
        regression = getattr(cls, "regression_defaults", {})
        defaults.update({k: v for k, v in regression.items() if k in cls.hparam_names()})
    return copy.deepcopy(defaults)


def make_learner(name: str, model: nn.Module, **hparams: Any) -> Learner:
    """Build learner ``name`` around ``model`` from its published defaults updated with ``hparams``."""
    cls = _learner_class(name)
    if not isinstance(model, nn.Module):
        raise LearnerError(f"learner {name!r} wraps a torch.nn.Module, got {type(model).__name__}")
    accepted = cls.hparam_names()
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise LearnerError(
            f"learner {name!r} has no option(s) {', '.join(unknown)}; its options are: {', '.join(accepted) or 'none'}"
        )
    return cls(model, **{**learner_defaults(name), **hparams})
