"""Non-meta-learned reference points, scored on the same episodes as the learner.

* :class:`ScratchBaseline` -- a freshly initialised network (the learner's architecture) trained on each
  task's support set alone: ``steps`` full-batch Adam steps (default 100, lr 1e-3), then scored on the
  query set. It shows what the support set teaches without any prior experience.
* :class:`PretrainBaseline` -- the "Baseline" of Chen et al. 2019 ("A Closer Look at Few-shot
  Classification"): the backbone plus a linear layer over *all* meta-train classes is trained on the
  pooled meta-train examples (``pretrain_steps`` Adam steps on minibatches); for each task a new linear
  head is trained on the *frozen* features of the support set (``finetune_steps`` full-batch Adam steps,
  zero-initialised) and scored on the query set. For regression it is the MAML paper's pretrained
  baseline: one network regressed on points pooled from many meta-train tasks, then fine-tuned as a
  whole on each task's support set.

Per-task training is vectorised: each task's parameters are a slice of stacked tensors and the model
runs under :func:`torch.func.vmap`, so a block of tasks trains in one batched forward/backward. Summing
the per-task losses gives every slice exactly its own task's gradient, and Adam is element-wise, so
this is identical to training the tasks one after another. Both baselines use the learner's backbone
as given by its ``spec`` (see :func:`metaauto.backbones.make_backbone`), so differences come from
meta-learning rather than from the architecture.
"""

from __future__ import annotations

import abc
import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from torch.func import functional_call, stack_module_state, vmap

from metaauto.backbones import make_backbone
from metaauto.engine.config import derive_seed
from metaauto.errors import LearnerError
from metaauto.learners.episodes import per_task_metric
from metaauto.runtime import cpu_workers, single_threaded_ops
from metaauto.tasks.batch import TaskBatch

_INIT_STREAM = 20
_PRETRAIN_STREAM = 21
Params = dict[str, torch.Tensor]


def _per_task_loss(output: torch.Tensor, target: torch.Tensor, task_type: str) -> torch.Tensor:
    """Mean loss of each task, ``[tasks]``, for outputs ``[tasks, n, out]``."""
    if task_type == "classification":
        losses = F.cross_entropy(output.flatten(0, 1), target.flatten(), reduction="none")
        return losses.view(target.shape).mean(dim=1)
    return (output - target).pow(2).flatten(1).mean(dim=1)


def fit_per_task(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    task_type: str,
    steps: int,
    lr: float,
    vectorize: bool | None = None,
) -> Params:
    """Train stacked per-task ``params`` (leading task dimension) of ``model`` on ``(x, y)`` with Adam.

    Adam is elementwise and each task's loss depends on its own parameters only, so training the stack
    at once (``vmap``) and one task at a time give the same parameters. ``vectorize=None`` picks vmap on
    CUDA and the loop on the CPU, where per-task convolution weights under vmap become grouped
    convolutions that ran about ten times slower than one small network per task (Conv4, 5-way 1-shot).
    """
    if vectorize is None:
        vectorize = x.device.type == "cuda"
    if vectorize:
        forward = vmap(lambda p, inputs: functional_call(model, p, (inputs,)))
        return _fit_stack(forward, params, x, y, task_type, steps, lr)

    def fit_one(t: int) -> Params:
        # functional_call swaps a module's tensors while it runs: each thread needs its own module
        own = copy.deepcopy(model)

        def forward_one(p: Params, inputs: torch.Tensor) -> torch.Tensor:  # a stack of one task
            return functional_call(own, {k: v[0] for k, v in p.items()}, (inputs[0],)).unsqueeze(0)

        return _fit_stack(forward_one, {k: v[t : t + 1] for k, v in params.items()}, x[t : t + 1], y[t : t + 1],
                          task_type, steps, lr)

    # tasks are independent and each is deterministic, so fitting them side by side changes nothing but time
    workers = min(cpu_workers(), x.shape[0])
    with single_threaded_ops(), ThreadPoolExecutor(max_workers=workers) as pool:
        fitted = list(pool.map(fit_one, range(x.shape[0])))
    return {k: torch.cat([f[k] for f in fitted]) for k in params}


def _fit_stack(
    forward: Callable[[Params, torch.Tensor], torch.Tensor],
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    task_type: str,
    steps: int,
    lr: float,
) -> Params:
    params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            _per_task_loss(forward(params, x), y, task_type).sum().backward()
            optimizer.step()
    return {k: v.detach() for k, v in params.items()}


def _predict(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vmap(lambda p, inputs: functional_call(model, p, (inputs,)))(params, x)


def _output_width(collection: Any, ways: int | None) -> int:
    return int(collection.output_dim(ways))


class Baseline(abc.ABC):
    """A method that needs no meta-training: ``fit`` once per collection, then score episodes."""

    name: ClassVar[str]

    def __init__(self, backbone: Mapping[str, Any], seed: int = 0) -> None:
        if "name" not in backbone or "input_shape" not in backbone:
            raise LearnerError(f"a baseline backbone spec needs 'name' and 'input_shape', got {dict(backbone)}")
        self.backbone = dict(backbone)
        self.seed = int(seed)
        self.task_type: str | None = None
        self.ways: int | None = None
        self.device = torch.device("cpu")
        self.out_features: int | None = None

    def build(self, out_features: int | None) -> nn.Module:
        return make_backbone(**{**self.backbone, "out_features": out_features})

    def fit(self, collection: Any, *, ways: int | None, device: torch.device) -> "Baseline":
        self.task_type, self.ways, self.device = collection.task_type, ways, device
        self.out_features = _output_width(collection, ways)
        return self

    def scorer(self, seed: int, batch_size: int) -> Callable[[TaskBatch, int], torch.Tensor]:
        """``(batch, index of its first task) -> per-task metric``; ``seed`` keys per-task randomness."""
        if self.task_type is None:
            raise RuntimeError(f"baseline {self.name!r} must be fitted before scoring")

        def score(batch: TaskBatch, first_task: int) -> torch.Tensor:
            parts = []
            for start in range(0, batch.tasks, batch_size):
                part = batch[start : start + batch_size].to(self.device)
                parts.append(self.score_tasks(part, seed, first_task + start).cpu())
            return torch.cat(parts)

        return score

    @abc.abstractmethod
    def score_tasks(self, batch: TaskBatch, seed: int, first_task: int) -> torch.Tensor:
        """Per-task metric of the tasks of ``batch`` (already on ``self.device``)."""

    def describe(self) -> dict[str, Any]:
        return {"backbone": self.backbone, **self._settings()}

    @abc.abstractmethod
    def _settings(self) -> dict[str, Any]: ...


class ScratchBaseline(Baseline):
    """Fresh initialisation per task, trained on the support set only (see the module docstring)."""

    name = "scratch"

    def __init__(self, backbone: Mapping[str, Any], steps: int = 100, lr: float = 1e-3, seed: int = 0) -> None:
        super().__init__(backbone, seed)
        self.steps, self.lr = int(steps), float(lr)

    def _settings(self) -> dict[str, Any]:
        return {"steps": self.steps, "lr": self.lr, "optimizer": "adam", "init": "fresh per task"}

    def score_tasks(self, batch: TaskBatch, seed: int, first_task: int) -> torch.Tensor:
        models = []
        for task in range(batch.tasks):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, _INIT_STREAM, first_task + task))
                models.append(self.build(self.out_features))
        params, _ = stack_module_state(models)
        params = {k: v.to(self.device) for k, v in params.items()}
        template = models[0].to(self.device)
        params = fit_per_task(template, params, batch.support_x, batch.support_y, batch.task_type, self.steps, self.lr)
        return per_task_metric(_predict(template, params, batch.query_x), batch.query_y, batch.task_type)


class PretrainBaseline(Baseline):
    """Pre-train on pooled meta-train data, fine-tune per task (see the module docstring)."""

    name = "pretrain"

    def __init__(
        self,
        backbone: Mapping[str, Any],
        pretrain_steps: int = 1000,
        pretrain_batch_size: int = 128,
        pretrain_lr: float = 1e-3,
        finetune_steps: int = 100,
        finetune_lr: float = 1e-2,
        max_examples: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(backbone, seed)
        self.pretrain_steps = int(pretrain_steps)
        self.pretrain_batch_size = int(pretrain_batch_size)
        self.pretrain_lr = float(pretrain_lr)
        self.finetune_steps = int(finetune_steps)
        self.finetune_lr = float(finetune_lr)
        self.max_examples = max_examples
        self.network: nn.Module | None = None
        self._fitted_on: tuple[str, int | None, str] | None = None

    def _settings(self) -> dict[str, Any]:
        return {
            "pretrain_steps": self.pretrain_steps,
            "pretrain_batch_size": self.pretrain_batch_size,
            "pretrain_lr": self.pretrain_lr,
            "finetune_steps": self.finetune_steps,
            "finetune_lr": self.finetune_lr,
            "finetune": "linear head on frozen features" if self.task_type == "classification" else "whole network",
            "optimizer": "adam",
        }

    def fit(self, collection: Any, *, ways: int | None, device: torch.device) -> "PretrainBaseline":
        """Pre-train on ``collection.pooled("train")``; a second call for the same data is free."""
        super().fit(collection, ways=ways, device=device)
        key = (collection.fingerprint, ways if self.task_type == "regression" else None, str(device))
        if self._fitted_on == key:
            return self
        pooled = collection.pooled("train", max_examples=self.max_examples, seed=self.seed)
        classification = self.task_type == "classification"
        width = int(pooled.n_classes) if classification else _output_width(collection, None)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, _PRETRAIN_STREAM))
            network = self.build(width).to(device)
        generator = torch.Generator().manual_seed(self.seed)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.pretrain_lr)
        network.train()
        with torch.enable_grad():
            for _ in tqdm(range(self.pretrain_steps), desc="pre-train baseline", unit="step", leave=False):
                index = torch.randint(pooled.x.shape[0], (self.pretrain_batch_size,), generator=generator)
                x, y = pooled.x[index].to(device), pooled.y[index].to(device)
                output = network(x)
                loss = F.cross_entropy(output, y) if classification else F.mse_loss(output, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        self.network = network.eval()
        self._fitted_on = key
        return self

    def score_tasks(self, batch: TaskBatch, seed: int, first_task: int) -> torch.Tensor:
        assert self.network is not None
        if batch.task_type == "classification":
            return self._score_linear_probe(batch)
        params = {k: v.detach().expand(batch.tasks, *v.shape) for k, v in self.network.named_parameters()}
        params = fit_per_task(
            self.network, params, batch.support_x, batch.support_y, batch.task_type, self.finetune_steps, self.finetune_lr
        )
        return per_task_metric(_predict(self.network, params, batch.query_x), batch.query_y, batch.task_type)

    def _score_linear_probe(self, batch: TaskBatch) -> torch.Tensor:
        features = getattr(self.network, "features", None)
        if features is None:
            raise LearnerError("the pretrain baseline needs a backbone with a .features submodule (conv4, mlp)")
        with torch.no_grad():
            # vmap keeps normalisation statistics per task, as the learners see them
            support, query = vmap(features)(batch.support_x), vmap(features)(batch.query_x)
        ways = self.out_features
        head = {
            "weight": torch.zeros(batch.tasks, ways, support.shape[-1], device=support.device),
            "bias": torch.zeros(batch.tasks, ways, device=support.device),
        }
        linear = nn.Linear(support.shape[-1], ways).to(support.device)
        head = fit_per_task(linear, head, support, batch.support_y, "classification", self.finetune_steps, self.finetune_lr)
        return per_task_metric(_predict(linear, head, query), batch.query_y, "classification")


def default_baselines(backbone: Mapping[str, Any], pretrain_steps: int = 1000, seed: int = 0) -> list[Baseline]:
    """Both baselines on ``backbone`` with their documented defaults."""
    return [ScratchBaseline(backbone, seed=seed), PretrainBaseline(backbone, pretrain_steps=pretrain_steps, seed=seed)]
