"""Baselines on the same episodes as the learner: they run, and they beat chance on Omniglot."""

from __future__ import annotations

import pytest
import torch

from metaauto.backbones import make_backbone
from metaauto.evaluation import PretrainBaseline, ScratchBaseline, compare
from metaauto.evaluation.baselines import fit_per_task
from metaauto.learners import make_learner
from metaauto.tasks import load_collection


def test_baselines_beat_chance_on_omniglot(data_dir):
    coll = load_collection("omniglot", data_dir=data_dir)
    torch.manual_seed(0)
    learner = make_learner("protonet", make_backbone("conv4", coll.input_shape, width=8))
    spec = learner.model.spec
    baselines = [ScratchBaseline(spec, steps=20, lr=1e-2), PretrainBaseline(spec, pretrain_steps=40, finetune_steps=50)]
    result = compare(learner, coll, baselines, ways=5, shots=1, queries=5, tasks=40, seed=0, batch_size=20)
    assert list(result.results) == ["protonet", "scratch", "pretrain"]
    for name in ("scratch", "pretrain"):
        scored = result.results[name]
        assert scored.tasks == len(scored.per_task) == 40
        assert scored.mean > 0.35, scored  # chance is 0.2
        assert scored.details["backbone"]["name"] == "conv4"
    assert set(result.paired) == {"scratch", "pretrain"}
    # same seed, same episodes, same per-task values
    again = compare(learner, coll, baselines[:1], ways=5, shots=1, queries=5, tasks=40, seed=0, batch_size=40)
    assert again.results["scratch"].per_task == pytest.approx(result.results["scratch"].per_task)


def test_pretrain_baseline_regression_beats_an_untrained_network():
    coll = load_collection("sinusoid")
    spec = make_backbone("mlp", coll.input_shape, 1).spec
    torch.manual_seed(0)
    untrained = make_learner("maml", make_backbone(**spec), inner_lr=0.01)
    result = compare(untrained, coll, [PretrainBaseline(spec, pretrain_steps=300, finetune_steps=20)],
                     ways=None, shots=10, queries=10, tasks=50)
    assert result.results["pretrain"].metric == "mse"
    assert result.results["pretrain"].mean < result.results["maml"].mean


def test_vectorised_per_task_training_equals_training_each_task_alone():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(4, 6, 3), torch.randint(0, 2, (4, 6))
    stacked = {k: v.detach().expand(4, *v.shape).clone() for k, v in model.named_parameters()}
    together = fit_per_task(model, stacked, x, y, "classification", steps=5, lr=0.1, vectorize=True)
    looped = fit_per_task(model, stacked, x, y, "classification", steps=5, lr=0.1, vectorize=False)
    for k in together:
        assert not torch.equal(together[k][0], stacked[k][0])  # it trained
        torch.testing.assert_close(together[k], looped[k], atol=1e-6, rtol=1e-5)
