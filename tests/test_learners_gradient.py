"""The composable gradient learner: exact meta-gradients, vmap/loop agreement, learning, fallbacks."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from learner_episodes import gaussian_episodes
from metaauto.backbones import make_backbone
from metaauto.errors import LearnerError
from metaauto.learners import make_learner
from metaauto.tasks import load_collection

GRADIENT_LEARNERS = ("maml", "fomaml", "reptile", "metasgd", "anil")


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_mlp(in_dim: int = 2, out: int = 3, hidden: tuple[int, ...] = (5,), seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return make_backbone("mlp", (in_dim,), out, hidden=hidden).double()


def tiny_batch(tasks: int = 3, seed: int = 0):
    return gaussian_episodes(tasks, ways=3, shots=2, queries=3, dim=2, informative=2, seed=seed, dtype=torch.float64)


def meta_grads(learner, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    learner.zero_grad()
    loss = learner.meta_loss(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["maml", "metasgd"])
def test_second_order_meta_gradient_matches_central_differences(name):
    learner = make_learner(name, tiny_mlp(), inner_lr=0.3, inner_steps=2)
    batch = tiny_batch()
    _, analytic = meta_grads(learner, batch)
    eps = 1e-6
    with torch.no_grad():
        for pname, param in learner.named_parameters():
            numeric = torch.empty_like(param)
            for i in range(param.numel()):
                flat = param.view(-1)
                original = flat[i].item()
                flat[i] = original + eps
                plus = learner.meta_loss(batch).item()
                flat[i] = original - eps
                minus = learner.meta_loss(batch).item()
                flat[i] = original
                numeric.view(-1)[i] = (plus - minus) / (2 * eps)
            torch.testing.assert_close(analytic[pname], numeric, rtol=1e-5, atol=1e-7, msg=pname)


@pytest.mark.parametrize("name", GRADIENT_LEARNERS)
def test_vmapped_and_looped_execution_agree(name):
    model = tiny_mlp()
    options = {"inner_lr": 0.3, "inner_steps": 2}
    vectorized = make_learner(name, model, vectorize=True, **options)
    looped = make_learner(name, copy.deepcopy(model), vectorize=False, **options)
    looped.load_state_dict(vectorized.state_dict())
    assert (vectorized.execution, looped.execution) == ("vmap", "loop")
    batch = tiny_batch(tasks=4)
    loss_v, grads_v = meta_grads(vectorized, batch)
    loss_l, grads_l = meta_grads(looped, batch)
    torch.testing.assert_close(loss_v, loss_l)
    assert grads_v.keys() == grads_l.keys() and grads_v
    for key in grads_v:
        torch.testing.assert_close(grads_v[key], grads_l[key], msg=key)
    out_v, out_l = vectorized.forward_episodes(batch), looped.forward_episodes(batch)
    torch.testing.assert_close(out_v.query_output, out_l.query_output)
    torch.testing.assert_close(out_v.per_task_metric, out_l.per_task_metric)


def test_chunked_vmap_gives_the_same_result():
    model = tiny_mlp()
    whole = make_learner("maml", model, inner_lr=0.3, inner_steps=2)
    chunked = make_learner("maml", model, inner_lr=0.3, inner_steps=2, chunk_size=2)
    batch = tiny_batch(tasks=5)
    loss_w, grads_w = meta_grads(whole, batch)
    loss_c, grads_c = meta_grads(chunked, batch)
    torch.testing.assert_close(loss_w, loss_c)
    for key in grads_w:
        torch.testing.assert_close(grads_w[key], grads_c[key])


def adapted_by_hand(model: nn.Module, batch, lr: float, steps: int) -> list[dict[str, torch.Tensor]]:
    """Plain-autograd SGD on each task's support set, returning the adapted parameters (detached)."""
    adapted = []
    for t in range(batch.tasks):
        params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
        for _ in range(steps):
            out = functional_call(model, params, (batch.support_x[t],))
            loss = F.cross_entropy(out, batch.support_y[t])
            grads = torch.autograd.grad(loss, list(params.values()))
            params = {n: (p - lr * g).detach().requires_grad_() for (n, p), g in zip(params.items(), grads)}
        adapted.append(params)
    return adapted


def test_first_order_is_the_query_gradient_at_the_adapted_parameters_and_differs_from_second_order():
    model = tiny_mlp()
    batch = tiny_batch(tasks=3)
    _, first = meta_grads(make_learner("fomaml", model, inner_lr=0.3, inner_steps=2), batch)
    _, second = meta_grads(make_learner("maml", model, inner_lr=0.3, inner_steps=2), batch)

    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for t, phi in enumerate(adapted_by_hand(model, batch, lr=0.3, steps=2)):
        loss = F.cross_entropy(functional_call(model, phi, (batch.query_x[t],)), batch.query_y[t]) / batch.tasks
        for (n, p), g in zip(phi.items(), torch.autograd.grad(loss, list(phi.values()))):
            expected[n] += g
    for key in expected:
        torch.testing.assert_close(first[f"model.{key}"], expected[key], msg=key)
    assert any(not torch.allclose(first[k], second[k], rtol=1e-3, atol=1e-6) for k in first)


def test_reptile_loss_reports_the_query_loss_and_backward_gives_the_mean_reptile_direction():
    model = tiny_mlp()
    batch = tiny_batch(tasks=3)
    learner = make_learner("reptile", model, inner_lr=0.3, inner_steps=3)
    loss, grads = meta_grads(learner, batch)
    adapted = adapted_by_hand(model, batch, lr=0.3, steps=3)
    query_losses = [
        F.cross_entropy(functional_call(model, phi, (batch.query_x[t],)), batch.query_y[t]) for t, phi in enumerate(adapted)
    ]
    torch.testing.assert_close(loss, torch.stack(query_losses).mean().detach())
    for name, theta in model.named_parameters():
        direction = torch.stack([theta.detach() - phi[name].detach() for phi in adapted]).mean(0)
        torch.testing.assert_close(grads[f"model.{name}"], direction, msg=name)


def test_anil_adapts_only_the_head():
    model = tiny_mlp()
    batch = tiny_batch()
    query = batch.query_x[0]
    design = torch.cat([model.features(query), torch.ones(len(query), 1, dtype=query.dtype)], dim=1).detach()

    def affine_in_unadapted_features(name: str) -> bool:
        predict = make_learner(name, model).adapt(batch.support_x[0], batch.support_y[0], inner_steps=3)
        out = predict(query).detach()
        assert not torch.allclose(out, model(query))  # adaptation moved something
        fitted = design @ (torch.linalg.pinv(design) @ out)
        return torch.allclose(fitted, out, atol=1e-10, rtol=0)

    assert make_learner("anil", model).adapted_names == ("head.weight", "head.bias")
    assert affine_in_unadapted_features("anil")
    assert not affine_in_unadapted_features("maml")  # control: adapting the body changes the features


def test_adaptation_runs_under_no_grad_in_both_executions():
    model = tiny_mlp()
    batch = tiny_batch()
    for vectorize in (True, False):
        learner = make_learner("maml", model, inner_lr=0.5, vectorize=vectorize)
        with torch.no_grad():
            adapted = learner.forward_episodes(batch, inner_steps=5)
            unadapted = learner.forward_episodes(batch, inner_steps=0)
        assert not adapted.loss.requires_grad
        assert adapted.loss < unadapted.loss


def test_eval_mode_uses_eval_inner_steps():
    model = tiny_mlp()
    learner = make_learner("maml", model, inner_lr=0.5, inner_steps=1, eval_inner_steps=4)
    batch = tiny_batch()
    train_loss = learner.forward_episodes(batch).loss
    learner.eval()
    torch.testing.assert_close(learner.forward_episodes(batch).loss, learner.forward_episodes(batch, inner_steps=4).loss)
    assert learner.steps_for(None) == 4
    learner.train()
    torch.testing.assert_close(learner.forward_episodes(batch).loss, train_loss)


def test_adapt_returns_a_predictor_fitted_to_the_support_set():
    model = tiny_mlp()
    learner = make_learner("maml", model, inner_lr=0.5)
    batch = tiny_batch()
    predict = learner.adapt(batch.support_x[1], batch.support_y[1], inner_steps=10)
    support_loss = F.cross_entropy(predict(batch.support_x[1]), batch.support_y[1])
    initial_loss = F.cross_entropy(model(batch.support_x[1]), batch.support_y[1])
    assert predict(batch.query_x[1]).shape == (9, 3)
    assert support_loss < 0.5 * initial_loss
    # and it is the same adaptation forward_episodes performs
    episode = learner.forward_episodes(batch[1], inner_steps=10)
    torch.testing.assert_close(predict(batch.query_x[1]).detach(), episode.query_output[0])


def test_metasgd_registers_learned_rates_that_receive_gradients():
    model = tiny_mlp()
    learner = make_learner("metasgd", model)
    names = [n for n, _ in learner.named_parameters()]
    assert "inner_lrs.head__weight" in names
    rates = learner.inner_lrs["head__weight"]
    assert rates.shape == model.head.weight.shape
    assert 0.005 <= rates.min() and rates.max() <= 0.1  # Li et al.'s uniform initialisation
    learner.meta_loss(tiny_batch()).backward()
    assert rates.grad is not None and rates.grad.abs().sum() > 0


#: per learner: inner steps while training and evaluating, and the outer Adam learning rate. Meta-SGD
#: learns its rates for a fixed number of steps (one, as in the paper), and Reptile needs several steps
#: before theta - phi carries more than the joint-training gradient.
SINUSOID_SETUP = {"maml": (2, 5, 1e-2), "fomaml": (2, 5, 1e-2), "anil": (2, 5, 1e-2), "reptile": (5, 5, 1e-2), "metasgd": (1, 1, 3e-3)}
CLASSIFICATION_SETUP = {"maml": (2, 1e-2), "fomaml": (2, 1e-2), "anil": (2, 1e-2), "reptile": (5, 1e-2), "metasgd": (2, 3e-3)}


@pytest.mark.parametrize("name", GRADIENT_LEARNERS)
def test_gradient_learners_learn_sinusoid_regression(name):
    sinusoid = load_collection("sinusoid")
    steps, eval_steps, outer_lr = SINUSOID_SETUP[name]
    torch.manual_seed(0)
    learner = make_learner(
        name, make_backbone("mlp", (1,), 1), inner_lr=0.05, inner_steps=steps, eval_inner_steps=eval_steps
    )
    optimizer = torch.optim.Adam(learner.parameters(), lr=outer_lr)
    val = sinusoid.sample("val", shots=10, queries=10, tasks=50, seed=0)

    def query_mse() -> float:
        learner.eval()
        with torch.no_grad():
            mse = learner.forward_episodes(val).per_task_metric.mean().item()
        learner.train()
        return mse

    initial = query_mse()
    for step in range(200):
        optimizer.zero_grad()
        learner.meta_loss(sinusoid.sample("train", shots=10, queries=10, tasks=10, seed=step)).backward()
        optimizer.step()
    assert query_mse() < 0.6 * initial


@pytest.mark.parametrize("name", GRADIENT_LEARNERS)
def test_gradient_learners_learn_few_shot_classification(name):
    steps, outer_lr = CLASSIFICATION_SETUP[name]
    torch.manual_seed(0)
    learner = make_learner(
        name, make_backbone("mlp", (16,), 3, hidden=(32, 32)), inner_lr=0.5, inner_steps=steps, eval_inner_steps=steps
    )
    optimizer = torch.optim.Adam(learner.parameters(), lr=outer_lr)
    for step in range(150):
        optimizer.zero_grad()
        learner.meta_loss(gaussian_episodes(8, seed=step)).backward()
        optimizer.step()
    learner.eval()
    with torch.no_grad():
        accuracy = learner.forward_episodes(gaussian_episodes(64, seed=10_000)).per_task_metric.mean().item()
    assert accuracy > 0.65  # chance is 1/3


def test_same_seed_same_result():
    def train() -> dict[str, torch.Tensor]:
        torch.manual_seed(3)
        learner = make_learner("metasgd", make_backbone("mlp", (16,), 3, hidden=(8,)))
        optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
        for step in range(5):
            optimizer.zero_grad()
            learner.meta_loss(gaussian_episodes(4, seed=step)).backward()
            optimizer.step()
        return learner.state_dict()

    first, second = train(), train()
    for key in first:
        assert torch.equal(first[key], second[key]), key


class RunningStatsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU())
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_batchnorm_with_running_stats_falls_back_to_the_loop_with_a_warning():
    with pytest.warns(RuntimeWarning, match=r"body\.1 \(BatchNorm1d with track_running_stats=True\)"):
        learner = make_learner("maml", RunningStatsNet().double())
    assert learner.execution == "loop"
    assert "body.1" in learner.execution_reason and "running statistics" in learner.execution_reason
    before = learner.model.body[1].running_mean.clone()
    out = learner.forward_episodes(tiny_batch())
    out.loss.backward()
    assert learner.model.head.weight.grad is not None
    assert not torch.equal(before, learner.model.body[1].running_mean)  # the loop keeps BatchNorm's semantics


def test_vectorize_true_on_an_unvmappable_module_raises():
    with pytest.raises(LearnerError, match=r"body\.1 \(BatchNorm1d"):
        make_learner("maml", RunningStatsNet(), vectorize=True)


class ItemNet(nn.Module):
    """A model that reads a Python number from a tensor, which vmap cannot batch."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x) * (1.0 + 0.0 * x.abs().max().item())


def test_auto_falls_back_when_the_model_raises_under_vmap():
    learner = make_learner("fomaml", ItemNet().double())
    assert learner.execution == "vmap"
    with pytest.warns(RuntimeWarning, match="ItemNet raised under torch.func.vmap"):
        looped = learner.forward_episodes(tiny_batch())
    assert learner.execution == "loop" and "ItemNet" in learner.execution_reason
    reference = make_learner("fomaml", copy.deepcopy(learner.model), vectorize=False)
    torch.testing.assert_close(looped.loss, reference.forward_episodes(tiny_batch()).loss)
    strict = make_learner("fomaml", ItemNet(), vectorize=True)
    with pytest.raises(LearnerError, match="ItemNet raised under torch.func.vmap"):
        strict.forward_episodes(tiny_batch().to("cpu"))


def test_vmappable_models_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner = make_learner("maml", make_backbone("conv4", (1, 28, 28), 5, width=4))
        assert learner.execution == "vmap" and learner.execution_reason == ""


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"inner_lr": 0.0}, "inner_lr must be positive, got 0.0"),
        ({"inner_lr": -1}, "inner_lr must be positive"),
        ({"inner_steps": -1}, "inner_steps must be a non-negative integer, got -1"),
        ({"eval_inner_steps": 1.5}, "eval_inner_steps must be a non-negative integer"),
        ({"outer": "sgd"}, "outer must be 'maml' or 'reptile'"),
        ({"vectorize": "yes"}, "vectorize must be 'auto', True or False"),
        ({"chunk_size": 0}, "chunk_size must be a positive integer"),
        ({"adapt": "body"}, "adapt must be 'all', 'head'"),
        ({"adapt": ["nothing.*"]}, r"match no parameter of the model; its parameters are \['features.1.weight'"),
        ({"inner_lr": [0.1, 0.2]}, "needs learn_inner_lr=True"),
        ({"outer": "reptile", "learn_inner_lr": True}, "no gradient to learned inner learning rates"),
    ],
)
def test_bad_hyperparameters_raise(options, message):
    with pytest.raises(LearnerError, match=message):
        make_learner("maml", tiny_mlp(), **options)


def test_bad_inner_steps_at_call_time_raise():
    learner = make_learner("maml", tiny_mlp())
    with pytest.raises(LearnerError, match="inner_steps must be a non-negative integer, got -2"):
        learner.forward_episodes(tiny_batch(), inner_steps=-2)


def test_anil_without_an_identifiable_head_names_what_it_looked_for():
    class Body(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 3)

        def forward(self, x):
            return self.layer(x)

    with pytest.raises(LearnerError, match="looked for a submodule with parameters named head, classifier, fc"):
        make_learner("anil", Body())
    # an nn.Sequential's last parameterised layer is its head; glob patterns select one explicitly
    assert make_learner("anil", nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))).adapted_names == ("2.weight", "2.bias")
    assert make_learner("maml", Body(), adapt=["layer.bias"]).adapted_names == ("layer.bias",)


def test_output_width_not_matching_ways_names_both_numbers():
    learner = make_learner("maml", tiny_mlp(out=4))
    with pytest.raises(LearnerError, match="outputs 4 values per example but the episodes have 3 ways"):
        learner.forward_episodes(tiny_batch())
    looped = make_learner("maml", tiny_mlp(out=2), vectorize=False)
    with pytest.raises(LearnerError, match="outputs 2 values per example but the episodes have 3 ways"):
        looped.forward_episodes(tiny_batch())


def test_regression_output_shape_mismatch_raises():
    batch = load_collection("sinusoid").sample("train", shots=5, queries=5, tasks=2, seed=0)
    learner = make_learner("maml", make_backbone("mlp", (1,), 2))
    with pytest.raises(LearnerError, match=r"outputs shape \(5, 2\) per task but the regression targets have shape \(5, 1\)"):
        learner.forward_episodes(batch)
