"""Per-task clone-and-loop baselines: how learn2learn, torchmeta and higher run a meta-batch.

These are the yardstick ``throughput.py`` measures metaauto's vectorised learners against, so they are
written independently of ``metaauto.learners`` (only the learner's *parameters* and ``hparams()`` are
read, never its algorithm code) and in the idiom of those libraries:

* gradient learners follow learn2learn's ``MAML``/``MetaSGD``: per task, :func:`clone_module` copies the
  module with its parameters *cloned in the graph*, each inner step takes
  ``torch.autograd.grad(create_graph=not first_order)`` and writes ``p - lr * g`` back into the clone
  (:func:`update_module`), and the query loss of the task is back-propagated on its own, divided by
  the meta-batch size (learn2learn's Omniglot example calls ``evaluation_error.backward()`` per task);
* ANIL follows learn2learn's ANIL example: per task the body embeds the support and query sets once,
  and only a clone of the head is adapted;
* Reptile follows learn2learn's and OpenAI's code: per task a deep copy of the model takes SGD steps on
  the support set, and ``(theta - phi) / tasks`` is added to ``theta.grad``;
* metric learners embed one task at a time (one forward of the task's support and query examples), as
  learn2learn's and the papers' episode loops do, and compute the same loss per task.

Every function here runs one meta-step's forward and backward on ``batch``: it accumulates gradients in
the ``.grad`` of the learner's parameters (the same tensors the metaauto learner trains) and returns the
mean query loss as a float, which must equal ``learner.meta_loss(batch)``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

ReferenceStep = Callable[[nn.Module, Any], float]


# ------------------------------------------------------------------------------ learn2learn idioms


def clone_module(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters are ``p.clone()``: gradients flow back to the original.

    Same semantics as ``learn2learn.utils.clone_module``: the clone shares buffers and hooks, and its
    parameters are differentiable functions of the original ones rather than new leaves.
    """
    clone = module.__new__(type(module))
    clone.__dict__ = module.__dict__.copy()
    clone._parameters = OrderedDict((name, None if p is None else p.clone()) for name, p in module._parameters.items())
    clone._buffers = module._buffers.copy()
    clone._modules = OrderedDict((name, None if m is None else clone_module(m)) for name, m in module._modules.items())
    return clone


def update_module(module: nn.Module, updates: dict[str, torch.Tensor]) -> None:
    """Replace each named parameter ``p`` of a cloned module by ``p + update`` (learn2learn's ``update_module``)."""
    for name, update in updates.items():
        *path, leaf = name.split(".")
        owner = module
        for part in path:
            owner = owner._modules[part]
        owner._parameters[leaf] = owner._parameters[leaf] + update


def _adapt(
    clone: nn.Module,
    loss: torch.Tensor,
    names: list[str],
    lrs: dict[str, torch.Tensor | float],
    first_order: bool,
) -> None:
    """One inner SGD step on ``clone``'s parameters ``names`` (learn2learn's ``MAML.adapt``)."""
    params = dict(clone.named_parameters())
    grads = torch.autograd.grad(
        loss, [params[n] for n in names], retain_graph=not first_order, create_graph=not first_order
    )
    update_module(clone, {n: -lrs[n] * g for n, g in zip(names, grads)})


def _split(batch: Any, task: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch.support_x[task], batch.support_y[task], batch.query_x[task], batch.query_y[task]


def _ways(batch: Any) -> int:
    return int(batch.ways) if batch.ways is not None else int(batch.support_y.max().item()) + 1


def _task_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, target) if not target.is_floating_point() else F.mse_loss(output, target)


# -------------------------------------------------------------------------------- gradient learners


def _options(learner: nn.Module) -> dict[str, Any]:
    """The learner's effective options: ``hparams()`` omits those its configuration pins (FOMAML's order)."""
    return {**learner.hparams(), **getattr(learner, "pinned", {})}


def _gradient_settings(learner: nn.Module) -> dict[str, Any]:
    hp = _options(learner)
    steps = hp["inner_steps"]
    if not learner.training and hp.get("eval_inner_steps") is not None:
        steps = hp["eval_inner_steps"]
    return {
        "steps": int(steps),
        "first_order": bool(hp.get("first_order", False)),
        "inner_lr": hp.get("inner_lr"),
        "learned": bool(hp.get("learn_inner_lr", False)),
    }


def _step_sizes(learner: nn.Module, names: list[str], settings: dict[str, Any]) -> dict[str, torch.Tensor | float]:
    """Fixed rate, or Meta-SGD's learned per-element rates (the learner's ``inner_lrs``)."""
    if settings["learned"]:
        return {n: learner.inner_lrs[n.replace(".", "__")] for n in names}
    return {n: float(settings["inner_lr"]) for n in names}


def maml_loop(learner: nn.Module, batch: Any) -> float:
    """MAML / FOMAML / Meta-SGD as learn2learn's ``MAML``/``MetaSGD`` wrappers run them, one task at a time."""
    settings = _gradient_settings(learner)
    model = learner.model
    names = [n for n, _ in model.named_parameters()]
    lrs = _step_sizes(learner, names, settings)
    tasks, total = batch.tasks, 0.0
    for t in range(tasks):
        support_x, support_y, query_x, query_y = _split(batch, t)
        clone = clone_module(model)
        for _ in range(settings["steps"]):
            _adapt(clone, _task_loss(clone(support_x), support_y), names, lrs, settings["first_order"])
        loss = _task_loss(clone(query_x), query_y)
        (loss / tasks).backward()
        total += loss.item()
    return total / tasks


def anil_loop(learner: nn.Module, batch: Any) -> float:
    """ANIL as learn2learn's example runs it: body features once per task and set, a cloned head adapts."""
    settings = _gradient_settings(learner)
    model = learner.model
    head_names = list(learner.adapted_names)
    prefix = head_names[0].split(".")[0]
    if any(n.split(".")[0] != prefix for n in head_names):
        raise ValueError(f"anil reference expects one head submodule, the learner adapts {head_names}")
    head, body = getattr(model, prefix), _body_of(model, prefix)
    local = [n.split(".", 1)[1] for n in head_names]
    lrs = {n.split(".", 1)[1]: lr for n, lr in _step_sizes(learner, head_names, settings).items()}
    tasks, total = batch.tasks, 0.0
    for t in range(tasks):
        support_x, support_y, query_x, query_y = _split(batch, t)
        support_features, query_features = body(support_x), body(query_x)
        clone = clone_module(head)
        for _ in range(settings["steps"]):
            _adapt(clone, _task_loss(clone(support_features), support_y), local, lrs, settings["first_order"])
        loss = _task_loss(clone(query_features), query_y)
        (loss / tasks).backward()
        total += loss.item()
    return total / tasks


def _body_of(model: nn.Module, head: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The feature extractor in front of ``model.<head>``: metaauto's backbones call it ``features``."""
    features = getattr(model, "features", None)
    if head == "head" and isinstance(features, nn.Module):
        return features
    raise ValueError(f"anil reference knows the body of backbones with .features/.head, not {type(model).__name__}")


def reptile_loop(learner: nn.Module, batch: Any) -> float:
    """Reptile: per task, SGD on a deep copy; the meta-gradient is the mean of ``theta - phi``.

    The returned loss is the query loss after adaptation (computed without a graph), which is what
    metaauto reports for Reptile.
    """
    settings = _gradient_settings(learner)
    model = learner.model
    params = list(model.parameters())
    tasks, total = batch.tasks, 0.0
    for t in range(tasks):
        support_x, support_y, query_x, query_y = _split(batch, t)
        fast = copy.deepcopy(model)
        optimizer = torch.optim.SGD(fast.parameters(), lr=float(settings["inner_lr"]))
        for _ in range(settings["steps"]):
            optimizer.zero_grad()
            _task_loss(fast(support_x), support_y).backward()
            optimizer.step()
        with torch.no_grad():
            total += _task_loss(fast(query_x), query_y).item()
            for p, q in zip(params, fast.parameters()):
                direction = (p - q) / tasks
                if p.grad is None:
                    p.grad = direction
                else:
                    p.grad += direction
    return total / tasks


# ---------------------------------------------------------------------------------- metric learners


def _embed_task(model: nn.Module, support_x: torch.Tensor, query_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward of a task's support and query examples together (learn2learn's ``model(data)``)."""
    embeddings = model(torch.cat([support_x, query_x])).flatten(1)
    return embeddings[: len(support_x)], embeddings[len(support_x) :]


def _metric_loop(
    learner: nn.Module, batch: Any, task_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
) -> float:
    ways, tasks, total = _ways(batch), batch.tasks, 0.0
    for t in range(tasks):
        support_x, support_y, query_x, query_y = _split(batch, t)
        support, query = _embed_task(learner.model, support_x, query_x)
        loss = task_loss(support, support_y, query, query_y, ways)
        (loss / tasks).backward()
        total += loss.item()
    return total / tasks


def protonet_loop(learner: nn.Module, batch: Any) -> float:
    """Prototypical networks, one episode at a time (Snell et al.'s and learn2learn's loop)."""
    cosine = learner.hparams().get("distance", "euclidean") == "cosine"

    def loss(support, support_y, query, query_y, ways):
        prototypes = torch.stack([support[support_y == c].mean(dim=0) for c in range(ways)])
        if cosine:
            logits = F.cosine_similarity(query.unsqueeze(1), prototypes.unsqueeze(0), dim=-1)
        else:
            logits = -torch.cdist(query, prototypes).pow(2)
        return F.cross_entropy(logits, query_y)

    return _metric_loop(learner, batch, loss)


def matchingnet_loop(learner: nn.Module, batch: Any) -> float:
    """Matching networks (cosine attention, no full-context embeddings), one episode at a time."""

    def loss(support, support_y, query, query_y, ways):
        attention = F.cosine_similarity(query.unsqueeze(1), support.unsqueeze(0), dim=-1).softmax(dim=-1)  # [Q, S]
        probabilities = attention @ F.one_hot(support_y, ways).to(attention.dtype)  # [Q, ways]
        return F.nll_loss(probabilities.log(), query_y)

    return _metric_loop(learner, batch, loss)


def relationnet_loop(learner: nn.Module, batch: Any) -> float:
    """Relation networks (class sums; the module outputs a logit per pair), one episode at a time.

    ``loss="mse"`` (Sung et al.): sigmoid scores regressed onto one-hot targets; ``"cross_entropy"``:
    softmax cross-entropy over the logits.
    """

    def loss(support, support_y, query, query_y, ways):
        classes = torch.stack([support[support_y == c].sum(dim=0) for c in range(ways)])  # [ways, D]
        pairs = torch.cat(
            [classes.unsqueeze(0).expand(len(query), -1, -1), query.unsqueeze(1).expand(-1, ways, -1)], dim=-1
        )
        logits = learner.relation(pairs).squeeze(-1)  # [Q, ways]
        if getattr(learner, "loss", "mse") == "cross_entropy":
            return F.cross_entropy(logits, query_y)
        scores = torch.sigmoid(logits)
        return F.mse_loss(scores, F.one_hot(query_y, ways).to(scores.dtype))

    return _metric_loop(learner, batch, loss)


# ------------------------------------------------------------------------------------------ dispatch

METRIC_LOOPS: dict[str, ReferenceStep] = {
    "protonet": protonet_loop,
    "matchingnet": matchingnet_loop,
    "relationnet": relationnet_loop,
}


def reference_step(learner: nn.Module) -> ReferenceStep:
    """The per-task loop that computes the same meta-loss as ``learner``, chosen from its hparams."""
    if learner.name in METRIC_LOOPS:
        return METRIC_LOOPS[learner.name]
    hp = _options(learner)
    adapt = hp.get("adapt", "all")
    if hp.get("outer", "maml") == "reptile":
        if adapt != "all":
            raise ValueError(f"no reference loop for Reptile with adapt={adapt!r}")
        return reptile_loop
    if adapt == "head":
        return anil_loop
    if adapt == "all":
        return maml_loop
    raise ValueError(f"no reference loop for learner {learner.name!r} with adapt={adapt!r}")
