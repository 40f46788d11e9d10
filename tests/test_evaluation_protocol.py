"""Evaluation as papers report it: mean +- 1.96 std / sqrt(n), paired episodes, adaptation curves."""

from __future__ import annotations

import math

import pytest
import torch

from metaauto.backbones import make_backbone
from metaauto.errors import LearnerError
from metaauto.evaluation import adaptation_curve, evaluate, iter_episodes, mean_ci95, paired_difference
from metaauto.learners import make_learner
from metaauto.tasks import load_collection


@pytest.fixture(scope="module")
def sinusoid():
    return load_collection("sinusoid")


def maml(coll):
    torch.manual_seed(0)
    return make_learner("maml", make_backbone("mlp", coll.input_shape, 1), inner_lr=0.01)


def test_confidence_interval_on_a_known_vector():
    mean, ci = mean_ci95([0.0, 1.0, 0.0, 1.0])
    assert mean == 0.5 and ci == pytest.approx(1.96 * 0.5 / 2)  # population std 0.5, n = 4
    mean, ci = mean_ci95([0.2, 0.4, 0.6, 0.8, 1.0])
    assert mean == pytest.approx(0.6) and ci == pytest.approx(1.96 * math.sqrt(0.08) / math.sqrt(5))
    assert mean_ci95([0.7]) == (0.7, 0.0)
    diff, width = paired_difference([0.9, 0.8, 0.7], [0.5, 0.4, 0.3])
    assert diff == pytest.approx(0.4) and width == pytest.approx(0.0, abs=1e-12)  # constant gap: no spread
    with pytest.raises(ValueError, match="same tasks"):
        paired_difference([1.0, 2.0], [1.0])


def test_episodes_depend_on_seed_and_count_only(sinusoid):
    first = [b for _, b in iter_episodes(sinusoid, "test", None, 5, 5, tasks=120, seed=3)]
    again = [b for _, b in iter_episodes(sinusoid, "test", None, 5, 5, tasks=120, seed=3)]
    other = [b for _, b in iter_episodes(sinusoid, "test", None, 5, 5, tasks=120, seed=4)]
    assert [b.tasks for b in first] == [50, 50, 20]
    assert all(torch.equal(a.support_x, b.support_x) for a, b in zip(first, again))
    assert not torch.equal(first[0].support_x, other[0].support_x)


def test_evaluate_reports_per_task_values_independent_of_batch_size(sinusoid):
    learner = maml(sinusoid)
    small = evaluate(learner, sinusoid, ways=None, shots=5, queries=10, tasks=60, seed=1, batch_size=7)
    large = evaluate(learner, sinusoid, ways=None, shots=5, queries=10, tasks=60, seed=1, batch_size=60)
    assert small.metric == "mse" and small.tasks == len(small.per_task) == 60
    assert torch.allclose(torch.tensor(small.per_task), torch.tensor(large.per_task), rtol=1e-5, atol=1e-6)
    mean, ci = mean_ci95(small.per_task)
    assert (small.mean, small.ci95) == (mean, ci)
    assert small.to_dict(per_task=False).keys() >= {"mean", "ci95", "tasks", "seed", "split"}


def test_adaptation_curve_improves_with_inner_steps(sinusoid):
    curve = adaptation_curve(maml(sinusoid), sinusoid, ways=None, shots=10, queries=10, tasks=50, max_steps=3)
    assert curve.steps == [0, 1, 2, 3]
    assert curve.mean[3] < curve.mean[0]
    assert curve.to_dict()["metric"] == "mse"


def test_adaptation_curve_needs_a_gradient_learner(data_dir):
    coll = load_collection("omniglot", data_dir=data_dir)
    learner = make_learner("protonet", make_backbone("conv4", coll.input_shape, width=4))
    with pytest.raises(LearnerError, match="gradient-based"):
        adaptation_curve(learner, coll, tasks=2)
