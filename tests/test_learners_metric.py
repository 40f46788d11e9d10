"""Metric learners: one batched forward per meta-batch, correct scores, and real learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learner_episodes import gaussian_episodes
from metaauto.backbones import make_backbone
from metaauto.engine import TrainConfig, meta_train
from metaauto.errors import LearnerError
from metaauto.evaluation import evaluate
from metaauto.learners.base import CPU_CHUNK_SIZE
from metaauto.learners import make_learner
from metaauto.tasks import TaskBatch, load_collection

METRIC_LEARNERS = ("protonet", "matchingnet", "relationnet")


pytestmark = pytest.mark.usefixtures("single_thread")


def embedding_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return make_backbone("mlp", (16,), None, hidden=(32, 32))


@pytest.mark.parametrize("name", METRIC_LEARNERS)
def test_the_whole_meta_batch_is_embedded_in_one_forward(name):
    """One (vmapped) call of the model for all tasks; it sees one task's support+query examples.

    ``chunk_size="auto"`` (the default) splits the meta-batch into chunks of ``CPU_CHUNK_SIZE`` tasks on
    the CPU: one call per chunk.
    """
    model = embedding_net()
    calls: list[tuple[int, ...]] = []
    model.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    batch = gaussian_episodes(6, ways=3, shots=2, queries=4)
    make_learner(name, model, chunk_size=None).meta_loss(batch).backward()
    assert calls == [(6 + 12, 16)]
    calls.clear()
    learner = make_learner(name, model)
    learner.meta_loss(batch).backward()
    assert len(calls) == -(-6 // CPU_CHUNK_SIZE) and learner.vmap_chunk_size(torch.device("cpu")) == CPU_CHUNK_SIZE
    assert learner.execution == "vmap" and learner.vmap_chunk_size(torch.device("cuda")) is None


@pytest.mark.parametrize("name", METRIC_LEARNERS)
def test_a_tasks_loss_does_not_depend_on_the_other_tasks(name):
    """With batch-statistics BatchNorm (conv4) each task is still normalised on its own."""
    torch.manual_seed(0)
    learner = make_learner(name, make_backbone("conv4", (1, 16, 16), None, width=8))
    x = torch.rand(4, 6, 1, 16, 16)
    batch = TaskBatch(x[:, :3], torch.arange(3).repeat(4, 1), x[:, 3:], torch.arange(3).repeat(4, 1), "classification", 3, 1)
    together = learner.forward_episodes(batch).query_output
    alone = torch.cat([learner.forward_episodes(batch[t]).query_output for t in range(4)])
    torch.testing.assert_close(together, alone)


def test_metric_learner_falls_back_to_a_loop_for_running_statistics():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8))
    calls: list[tuple[int, ...]] = []
    model.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    with pytest.warns(RuntimeWarning, match="running statistics"):
        learner = make_learner("protonet", model)
    assert learner.execution == "loop"
    learner.meta_loss(gaussian_episodes(5, ways=3, shots=2, queries=4)).backward()
    assert calls == [(6 + 12, 16)] * 5


@pytest.mark.parametrize("name", METRIC_LEARNERS)
def test_metric_learners_learn_few_shot_classification(name):
    model = embedding_net()
    options = {"hidden": 32} if name == "relationnet" else {}
    learner = make_learner(name, model, **options)
    optimizer = torch.optim.Adam(learner.parameters(), lr=3e-3)
    test = gaussian_episodes(64, seed=10_000)
    with torch.no_grad():
        initial = learner.forward_episodes(test).per_task_metric.mean().item()
    for step in range(150):
        optimizer.zero_grad()
        learner.meta_loss(gaussian_episodes(8, seed=step)).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = learner.forward_episodes(test).per_task_metric.mean().item()
    assert accuracy > 0.75 and accuracy > initial + 0.15  # chance is 1/3


def test_protonet_logits_are_negative_squared_distances_to_class_means():
    model = embedding_net()
    batch = gaussian_episodes(2, ways=3, shots=2, queries=2)
    out = make_learner("protonet", model).forward_episodes(batch)
    cosine = make_learner("protonet", model, distance="cosine").forward_episodes(batch)
    for t in range(2):
        support, query = model(batch.support_x[t]), model(batch.query_x[t])
        prototypes = support.reshape(3, 2, -1).mean(dim=1)
        torch.testing.assert_close(out.query_output[t], -torch.cdist(query, prototypes).pow(2), rtol=1e-4, atol=1e-4)
        expected = F.cosine_similarity(query.unsqueeze(1), prototypes.unsqueeze(0), dim=-1)
        torch.testing.assert_close(cosine.query_output[t], expected.detach(), rtol=1e-5, atol=1e-6)
        accuracy = (out.query_output[t].argmax(-1) == batch.query_y[t]).float().mean()
        torch.testing.assert_close(out.per_task_metric[t], accuracy)


def test_matchingnet_outputs_log_probabilities_of_cosine_attention():
    model = embedding_net()
    batch = gaussian_episodes(2, ways=3, shots=2, queries=2)
    out = make_learner("matchingnet", model).forward_episodes(batch)
    support, query = model(batch.support_x[0]), model(batch.query_x[0])
    attention = F.cosine_similarity(query.unsqueeze(1), support.unsqueeze(0), dim=-1).softmax(dim=-1)
    expected = attention @ F.one_hot(batch.support_y[0], 3).float()
    torch.testing.assert_close(out.query_output[0].exp(), expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, F.nll_loss(out.query_output.flatten(0, 1), batch.query_y.flatten()))


def test_relationnet_registers_its_relation_module_and_uses_mse():
    model = embedding_net()
    learner = make_learner("relationnet", model)
    assert any(name.startswith("relation.") for name, _ in learner.named_parameters())
    batch = gaussian_episodes(2, ways=3, shots=2, queries=2)
    out = learner.forward_episodes(batch)
    assert ((out.query_output > 0) & (out.query_output < 1)).all()
    torch.testing.assert_close(out.loss, F.mse_loss(out.query_output, F.one_hot(batch.query_y, 3).float()))
    out.loss.backward()
    assert learner.relation[0].weight.grad is not None and model.head is None


def test_relationnet_cross_entropy_reads_relation_logits_as_class_logits():
    model = embedding_net()
    mse = make_learner("relationnet", model)
    ce = make_learner("relationnet", model, loss="cross_entropy")
    ce.load_state_dict(mse.state_dict())
    assert ce.hparams() == {"hidden": 8, "embedding_dim": 32, "loss": "cross_entropy"} and "loss" not in mse.hparams()
    batch = gaussian_episodes(2, ways=3, shots=2, queries=2)
    out = ce.forward_episodes(batch)
    torch.testing.assert_close(out.query_output.sigmoid(), mse.forward_episodes(batch).query_output)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.query_output.flatten(0, 1), batch.query_y.flatten()))
    with pytest.raises(LearnerError, match="loss must be one of 'mse', 'cross_entropy', got 'hinge'"):
        make_learner("relationnet", model, loss="hinge")


def test_relationnet_hidden_units_stay_alive_on_a_nonnegative_embedding():
    """The old head (no normalisation) on conv4's non-negative embedding started with dead ReLUs and
    collapsed to a constant score; the LayerNorm keeps about half of the hidden units active."""
    torch.manual_seed(0)
    learner = make_learner("relationnet", make_backbone("conv4", (1, 28, 28), None))
    pairs = torch.rand(500, 2 * learner.embedding_dim) * 3
    hidden = learner.relation[:3](pairs)
    assert 0.3 < (hidden > 0).float().mean() < 0.7
    assert learner.relation(pairs).std() > 1e-3


@pytest.fixture(scope="module")
def omniglot(data_dir):
    return load_collection("omniglot", data_dir=data_dir)


def test_relationnet_meta_trains_on_omniglot_5way_1shot_far_above_chance(omniglot):
    """Real Omniglot, 5-way 1-shot, 100 meta-steps of 4 tasks: the old head stayed at chance (0.2)."""
    torch.manual_seed(0)
    learner = make_learner("relationnet", make_backbone("conv4", omniglot.input_shape, width=16), loss="cross_entropy")
    config = TrainConfig(ways=5, shots=1, queries=5, meta_batch_size=4, meta_steps=100, meta_lr=3e-3,
                         val_every=100, val_tasks=20, progress=False)
    result = meta_train(learner, omniglot, config)
    assert result.final_step == 100
    test = evaluate(learner, omniglot, ways=5, shots=1, queries=5, tasks=100, seed=0)
    assert test.mean > 0.5, (test, result.history.val)  # chance is 0.2


@pytest.mark.parametrize("name", METRIC_LEARNERS)
def test_adapt_predicts_like_forward_episodes_on_that_task(name):
    learner = make_learner(name, embedding_net())
    batch = gaussian_episodes(3, ways=3, shots=2, queries=4)
    predict = learner.adapt(batch.support_x[1], batch.support_y[1])
    torch.testing.assert_close(predict(batch.query_x[1]).detach(), learner.forward_episodes(batch[1]).query_output[0])


@pytest.mark.parametrize("name", METRIC_LEARNERS)
def test_metric_learners_refuse_regression(name):
    learner = make_learner(name, make_backbone("mlp", (1,), None))
    batch = load_collection("sinusoid").sample("train", shots=5, queries=5, tasks=2, seed=0)
    with pytest.raises(LearnerError, match=f"learner '{name}' solves classification tasks, but the batch holds regression"):
        learner.forward_episodes(batch)
    with pytest.raises(LearnerError, match="classification tasks only"):
        learner.adapt(batch.support_x[0], batch.support_y[0])


def test_protonet_rejects_an_unknown_distance():
    with pytest.raises(LearnerError, match="distance must be 'euclidean' or 'cosine', got 'manhattan'"):
        make_learner("protonet", embedding_net(), distance="manhattan")


def test_relationnet_needs_the_embedding_width_of_a_user_model():
    user_model = nn.Sequential(nn.Linear(16, 8), nn.ReLU())
    with pytest.raises(LearnerError, match="Sequential has no integer out_dim attribute; pass embedding_dim="):
        make_learner("relationnet", user_model)
    learner = make_learner("relationnet", user_model, embedding_dim=8)
    assert learner.hparams() == {"hidden": 8, "embedding_dim": 8}
    learner.meta_loss(gaussian_episodes(2)).backward()
    wrong = make_learner("relationnet", user_model, embedding_dim=5)
    with pytest.raises(LearnerError, match="embeds examples into 8 values but the relation module was built for embedding_dim=5"):
        wrong.forward_episodes(gaussian_episodes(2))
    with pytest.raises(LearnerError, match="hidden must be a positive integer"):
        make_learner("relationnet", user_model, embedding_dim=8, hidden=0)


@pytest.mark.parametrize("name", METRIC_LEARNERS)
def test_vectorize_false_loops_and_matches_the_vmapped_result(name):
    batch = gaussian_episodes(4, ways=3, shots=2, queries=4)
    vmapped = make_learner(name, embedding_net())
    looped = make_learner(name, embedding_net(), vectorize=False)
    looped.load_state_dict(vmapped.state_dict())
    assert looped.execution == "loop" and looped.hparams()["vectorize"] is False
    torch.testing.assert_close(looped.forward_episodes(batch).loss, vmapped.forward_episodes(batch).loss)
