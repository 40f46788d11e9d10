"""One composable gradient-based learner; MAML, FOMAML, Reptile, Meta-SGD and ANIL are configurations.

The knobs that distinguish the published algorithms are independent, so they are options of a single
:class:`GradientLearner` rather than five near-copies:

* which parameters adapt in the inner loop (``adapt``): all of them, the head only (ANIL), or those
  whose names match glob patterns;
* the inner update rule: a fixed learning rate, or a learned per-parameter learning rate registered on
  the learner (``learn_inner_lr``, Meta-SGD);
* the order of the meta-gradient (``first_order``) and the number of inner steps;
* the outer update (``outer``): ``"maml"`` backpropagates the query loss through the inner loop,
  ``"reptile"`` moves the meta-parameters towards the adapted ones.

Execution. The tasks of a meta-batch run under :func:`torch.func.vmap`; inner gradients are taken with
:func:`torch.func.grad` inside the per-task function, and the outer ``.backward()`` differentiates
through them (as in functorch's maml-omniglot example). ``torch.func.grad`` ignores an enclosing
``torch.no_grad()``, so adaptation also works under evaluation. Modules that cannot be vmapped --
BatchNorm/InstanceNorm with running statistics, or anything that raises under ``vmap`` -- run one task at
a time with :func:`torch.autograd.grad` instead; with ``vectorize="auto"`` that fallback is announced
with a warning and recorded in ``execution``/``execution_reason``, never silent.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from metaauto.errors import LearnerError
from metaauto.learners.base import EpisodeOutput, Learner, running_stats_module  # noqa: F401 (re-export)
from metaauto.learners.episodes import check_task_type, episode_ways, per_task_metric, task_loss
from metaauto.tasks.batch import TaskBatch

Params = dict[str, torch.Tensor]
GradFn = Callable[..., Params]

#: submodule names ANIL accepts as "the head", in order of preference
HEAD_NAMES = ("head", "classifier", "fc", "linear", "output", "out")


def find_head(model: nn.Module) -> str:
    """Name prefix of the model's final layer (the part ANIL adapts)."""
    for name in HEAD_NAMES:
        sub = getattr(model, name, None)
        if isinstance(sub, nn.Module) and any(True for _ in sub.parameters()):
            return name
    if isinstance(model, nn.Sequential):
        for name, child in reversed(list(model.named_children())):
            if any(True for _ in child.parameters()):
                return name
    raise LearnerError(
        f"cannot find the head of {type(model).__name__}: looked for a submodule with parameters named "
        f"{', '.join(HEAD_NAMES)}, or the last parameterised layer of an nn.Sequential; name the head "
        "parameters with adapt=['<pattern>', ...] instead"
    )


class GradientLearner(Learner):
    """Gradient-based meta-learner; registered as ``"maml"`` with all options open.

    Args:
        model: any module mapping a batch of inputs to logits ``[n, ways]`` or values ``[n, out_dim]``.
        inner_lr: inner-loop step size. With ``learn_inner_lr`` it is the initial value of every
            learned rate, or a pair ``[low, high]`` to draw each rate uniformly (Meta-SGD's init).
        inner_steps: inner gradient steps on the support set while training.
        eval_inner_steps: inner steps when the learner is in ``eval()`` mode (``None``: ``inner_steps``).
            The published setups adapt longer at test time (MAML Omniglot: 1 train, 3 test).
        first_order: drop the second-order terms (FOMAML); saves the memory of the inner graph.
        adapt: ``"all"``, ``"head"`` (ANIL) or glob patterns of parameter names, e.g. ``["head.*"]``.
        learn_inner_lr: learn one rate per parameter element (Meta-SGD); registered as
            ``learner.inner_lrs`` so optimisers over ``learner.parameters()`` train them.
        outer: ``"maml"`` (query-loss backprop) or ``"reptile"`` (direction ``theta - phi``).
        vectorize: ``"auto"``, ``True`` (vmap or raise) or ``False`` (always one task at a time).
        chunk_size: tasks per vmap chunk (``None``: all at once; ``"auto"``: all at once on CUDA, small
            chunks on the CPU, see :meth:`~metaauto.learners.base.Learner.vmap_chunk_size`).

    The inner loop adapts on the support set. MAML-style outer updates score the adapted parameters on
    the query set; Reptile also trains on the support set only, and uses the query set just to report
    the loss after adaptation.
    """

    name: ClassVar[str] = "maml"
    family: ClassVar[str] = "gradient"
    task_types: ClassVar[tuple[str, ...]] = ("classification", "regression")
    #: options a configuration fixes (and therefore does not accept)
    pinned: ClassVar[dict[str, Any]] = {}
    #: published Omniglot configuration; also the constructor defaults of the configuration.
    #: Finn et al. 2017, "Model-Agnostic Meta-Learning", sec. 5.2: 5-way Omniglot trained with one
    #: inner step of size 0.4 (meta-batch 32), evaluated with 3 steps of the same size.
    defaults: ClassVar[dict[str, Any]] = {"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3, "first_order": False}
    #: published regression configuration, applied over ``defaults`` for regression collections:
    #: Finn et al. 2017, sec. 5.1 (sinusoid): one inner step of size 0.01 while training, up to 10 at test
    #: time. The Omniglot step size of 0.4 diverges on regression targets of amplitude up to 5.
    regression_defaults: ClassVar[dict[str, Any]] = {"inner_lr": 0.01, "inner_steps": 1, "eval_inner_steps": 10}

    def __init__(
        self,
        model: nn.Module,
        *,
        inner_lr: float | Sequence[float] = 0.4,
        inner_steps: int = 1,
        eval_inner_steps: int | None = None,
        first_order: bool = False,
        adapt: str | Sequence[str] = "all",
        learn_inner_lr: bool = False,
        outer: str = "maml",
        vectorize: bool | str = "auto",
        chunk_size: int | str | None = "auto",
    ) -> None:
        self._validate(inner_lr, inner_steps, eval_inner_steps, adapt, learn_inner_lr, outer)
        super().__init__(model, vectorize=vectorize, chunk_size=chunk_size)
        self.inner_lr = list(inner_lr) if isinstance(inner_lr, (list, tuple)) else float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.eval_inner_steps = None if eval_inner_steps is None else int(eval_inner_steps)
        self.first_order = bool(first_order)
        self.adapt_spec: str | list[str] = adapt if isinstance(adapt, str) else list(adapt)
        self.learn_inner_lr = bool(learn_inner_lr)
        self.outer = outer
        self.adapted_names = self._select_adapted(model, self.adapt_spec)
        if self.learn_inner_lr:
            params = dict(model.named_parameters())
            self.inner_lrs = nn.ParameterDict(
                {self._lr_key(n): nn.Parameter(self._initial_lr(params[n])) for n in self.adapted_names}
            )

    # ----------------------------------------------------------------------------------- construction

    @staticmethod
    def _validate(inner_lr, inner_steps, eval_inner_steps, adapt, learn_inner_lr, outer) -> None:
        if isinstance(inner_lr, (list, tuple)):
            if not learn_inner_lr:
                raise LearnerError("inner_lr=[low, high] draws learned rates and needs learn_inner_lr=True")
            if len(inner_lr) != 2 or not 0 < inner_lr[0] <= inner_lr[1]:
                raise LearnerError(f"inner_lr range must be [low, high] with 0 < low <= high, got {list(inner_lr)}")
        elif not inner_lr > 0:
            raise LearnerError(f"inner_lr must be positive, got {inner_lr}")
        for label, steps in (("inner_steps", inner_steps), ("eval_inner_steps", eval_inner_steps)):
            if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 0):
                raise LearnerError(f"{label} must be a non-negative integer, got {steps!r}")
        if outer not in ("maml", "reptile"):
            raise LearnerError(f"outer must be 'maml' or 'reptile', got {outer!r}")
        if outer == "reptile" and learn_inner_lr:
            raise LearnerError(
                "Reptile's outer update (theta - phi) gives no gradient to learned inner learning rates; "
                "use learn_inner_lr=False with outer='reptile'"
            )
        if isinstance(adapt, str) and adapt not in ("all", "head"):
            raise LearnerError(f"adapt must be 'all', 'head' or a list of parameter-name patterns, got {adapt!r}")

    @staticmethod
    def _select_adapted(model: nn.Module, adapt: str | list[str]) -> tuple[str, ...]:
        names = [n for n, p in model.named_parameters()]
        if not names:
            raise LearnerError(f"{type(model).__name__} has no parameters to adapt")
        if adapt == "all":
            return tuple(names)
        if adapt == "head":
            head = find_head(model)
            return tuple(n for n in names if n.startswith(head + "."))
        chosen = tuple(n for n in names if any(fnmatch.fnmatchcase(n, pattern) for pattern in adapt))
        if not chosen:
            raise LearnerError(f"adapt patterns {adapt} match no parameter of the model; its parameters are {names}")
        return chosen

    @staticmethod
    def _lr_key(param_name: str) -> str:
        return param_name.replace(".", "__")

    def _initial_lr(self, param: torch.Tensor) -> torch.Tensor:
        if isinstance(self.inner_lr, list):
            low, high = self.inner_lr
            return torch.empty_like(param, requires_grad=False).uniform_(low, high)
        return torch.full_like(param, self.inner_lr, requires_grad=False)

    # -------------------------------------------------------------------------------------- contract

    @classmethod
    def hparam_names(cls) -> tuple[str, ...]:
        """Keyword options this configuration accepts (those of :class:`GradientLearner` minus pinned)."""
        signature = inspect.signature(GradientLearner.__init__)
        return tuple(n for n in signature.parameters if n not in ("self", "model") and n not in cls.pinned)

    def hparams(self) -> dict[str, Any]:
        values = {
            "inner_lr": self.inner_lr,
            "inner_steps": self.inner_steps,
            "eval_inner_steps": self.eval_inner_steps,
            "first_order": self.first_order,
            "adapt": self.adapt_spec,
            "learn_inner_lr": self.learn_inner_lr,
            "outer": self.outer,
            "vectorize": self.vectorize,
            "chunk_size": self.chunk_size,
        }
        return {k: v for k, v in values.items() if k not in self.pinned}

    def steps_for(self, inner_steps: int | None) -> int:
        """Inner steps of a call: explicit, else ``eval_inner_steps`` in eval mode, else ``inner_steps``."""
        if inner_steps is None:
            if not self.training and self.eval_inner_steps is not None:
                return self.eval_inner_steps
            return self.inner_steps
        if isinstance(inner_steps, bool) or int(inner_steps) != inner_steps or inner_steps < 0:
            raise LearnerError(f"inner_steps must be a non-negative integer, got {inner_steps!r}")
        return int(inner_steps)

    def forward_episodes(self, batch: TaskBatch, *, inner_steps: int | None = None) -> EpisodeOutput:
        check_task_type(self.name, self.task_types, batch)
        steps = self.steps_for(inner_steps)
        ways = episode_ways(batch) if batch.task_type == "classification" else None
        fast, slow = self._split_params()
        lrs = self._step_sizes()
        data = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        episode = functools.partial(
            self._episode, steps=steps, ways=ways, task_type=batch.task_type, vectorized=True
        )
        def vectorized():
            return vmap(
                episode, in_dims=(None, None, None, 0, 0, 0, 0), randomness="different",
                chunk_size=self.vmap_chunk_size(batch.support_x.device),
            )(fast, slow, lrs, *data)

        def looped():
            results = [episode(fast, slow, lrs, *(d[t] for d in data), vectorized=False) for t in range(batch.tasks)]
            return (
                torch.stack([r[0] for r in results]),
                torch.stack([r[1] for r in results]),
                {k: torch.stack([r[2][k] for r in results]) for k in results[0][2]},
            )

        losses, outputs, adapted = self._run_tasks(vectorized, looped)
        query_loss = losses.mean()
        if self.outer == "reptile":
            query_loss = query_loss.detach() + self._reptile_surrogate(fast, adapted)
        return EpisodeOutput(
            loss=query_loss,
            query_output=outputs.detach(),
            per_task_metric=per_task_metric(outputs, batch.query_y, batch.task_type),
        )

    def adapt(
        self, support_x: torch.Tensor, support_y: torch.Tensor, *, inner_steps: int | None = None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        steps = self.steps_for(inner_steps)
        task_type = "regression" if support_y.is_floating_point() else "classification"
        fast, slow = self._split_params()
        grad_fn = self._func_grad if self.execution == "vmap" else self._autograd_grad
        fast = self._inner_loop(fast, slow, self._step_sizes(), support_x, support_y, steps, None, task_type, grad_fn)
        params = {**slow, **fast}

        def predict(query_x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.model, params, (query_x,))

        return predict

    # ------------------------------------------------------------------------------------ inner loop

    def _split_params(self) -> tuple[Params, Params]:
        params = dict(self.model.named_parameters())
        adapted = set(self.adapted_names)
        return {n: params[n] for n in self.adapted_names}, {n: p for n, p in params.items() if n not in adapted}

    def _step_sizes(self) -> dict[str, torch.Tensor | float]:
        if self.learn_inner_lr:
            return {n: self.inner_lrs[self._lr_key(n)] for n in self.adapted_names}
        return {n: self.inner_lr for n in self.adapted_names}

    def _episode(
        self,
        fast: Params,
        slow: Params,
        lrs: dict[str, torch.Tensor | float],
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        *,
        steps: int,
        ways: int | None,
        task_type: str,
        vectorized: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, Params]:
        """Adapt on one task's support set and score its query set (the unit that vmap batches)."""
        grad_fn = self._func_grad if vectorized else self._autograd_grad
        if self.outer == "reptile":
            # Reptile needs no graph through the episode: its meta-gradient is built from the result.
            with torch.no_grad():
                phi = self._inner_loop(fast, slow, lrs, support_x, support_y, steps, ways, task_type, grad_fn)
                output = functional_call(self.model, (phi, slow), (query_x,))
                return task_loss(output, query_y, task_type, ways), output, phi
        phi = self._inner_loop(fast, slow, lrs, support_x, support_y, steps, ways, task_type, grad_fn)
        output = functional_call(self.model, (phi, slow), (query_x,))
        return task_loss(output, query_y, task_type, ways), output, {}

    def _inner_loop(
        self,
        fast: Params,
        slow: Params,
        lrs: dict[str, torch.Tensor | float],
        x: torch.Tensor,
        y: torch.Tensor,
        steps: int,
        ways: int | None,
        task_type: str,
        grad_fn: GradFn,
    ) -> Params:
        create_graph = not self.first_order and torch.is_grad_enabled()
        for _ in range(steps):
            grads = grad_fn(fast, slow, x, y, ways, task_type, create_graph)
            fast = {n: fast[n] - lrs[n] * grads[n] for n in fast}
        return fast

    def _support_loss(self, fast: Params, slow: Params, x: torch.Tensor, y: torch.Tensor, ways, task_type) -> torch.Tensor:
        return task_loss(functional_call(self.model, (fast, slow), (x,)), y, task_type, ways)

    def _func_grad(self, fast, slow, x, y, ways, task_type, create_graph: bool) -> Params:
        """Inner gradient as a function transform: vmappable, and differentiable by the outer backward."""
        if create_graph:
            return grad(self._support_loss)(fast, slow, x, y, ways, task_type)
        # torch.func.grad still differentiates inside no_grad; no_grad only keeps the outer autograd from
        # recording the inner forward/backward that a first-order update never differentiates.
        with torch.no_grad():
            return grad(self._support_loss)(fast, slow, x, y, ways, task_type)

    def _autograd_grad(self, fast, slow, x, y, ways, task_type, create_graph: bool) -> Params:
        """Inner gradient with plain autograd, for modules that cannot run under function transforms."""
        with torch.enable_grad():
            leaves = {
                n: p if create_graph and p.requires_grad else p.detach().requires_grad_() for n, p in fast.items()
            }
            loss = self._support_loss(leaves, slow, x, y, ways, task_type)
            grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=create_graph)
        return dict(zip(leaves, grads))

    @staticmethod
    def _reptile_surrogate(theta: Params, phi: Params) -> torch.Tensor:
        """``0.5 * ||theta - phi||^2`` averaged over tasks: its gradient is the mean Reptile direction."""
        tasks = next(iter(phi.values())).shape[0]
        total = sum(0.5 * (theta[n] - phi[n].detach()).pow(2).sum() for n in theta) / tasks
        return total - total.detach()


class PinnedGradientLearner(GradientLearner):
    """A named configuration of :class:`GradientLearner` that fixes some of its options."""

    def __init__(self, model: nn.Module, **hparams: Any) -> None:
        for key, value in self.pinned.items():
            if key in hparams:
                raise LearnerError(f"{self.name} fixes {key}={value!r}; it is not an option of this learner")
        super().__init__(model, **{**hparams, **self.pinned})


class FOMAML(PinnedGradientLearner):
    """First-order MAML: the meta-gradient is the query-loss gradient at the adapted parameters."""

    name = "fomaml"
    pinned = {"first_order": True}
    #: Finn et al. 2017 (sec. 5.2) use the first-order approximation with MAML's own settings.
    defaults = {"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3}


class Reptile(PinnedGradientLearner):
    """Reptile: adapt on the support set, then move the initialisation towards the adapted weights.

    ``meta_loss()`` returns the query loss after adaptation (for logging) plus a zero-valued surrogate
    whose gradient is the mean of ``theta - phi`` over tasks, so ``loss.backward()`` followed by an
    optimiser step with learning rate ``epsilon`` is Reptile's ``theta <- theta + epsilon (phi - theta)``.
    """

    name = "reptile"
    pinned = {"outer": "reptile", "first_order": True, "learn_inner_lr": False}
    #: Nichol et al. 2018, "On First-Order Meta-Learning Algorithms", Omniglot: 5 inner iterations
    #: while training, 50 at evaluation, outer step size 1.0 annealed to 0, meta-batch 5. The paper's
    #: inner optimiser is Adam (lr 1e-3, beta1 = 0); metaauto's inner rule is plain SGD, and 0.1 is our
    #: SGD stand-in for it, not a published value.
    defaults = {"inner_lr": 0.1, "inner_steps": 5, "eval_inner_steps": 50}
    #: regression: MAML's sinusoid step size with Reptile's own 5 inner steps (our choice, not a
    #: published configuration: Reptile's sinusoid runs use Adam in the inner loop)
    regression_defaults = {"inner_lr": 0.01, "inner_steps": 5, "eval_inner_steps": 10}


class MetaSGD(PinnedGradientLearner):
    """Meta-SGD: MAML with a learned learning rate for every parameter element."""

    name = "metasgd"
    pinned = {"learn_inner_lr": True}
    #: Li et al. 2017, "Meta-SGD": one adaptation step, rates initialised uniformly in [0.005, 0.1].
    defaults = {"inner_lr": [0.005, 0.1], "inner_steps": 1, "eval_inner_steps": 1, "first_order": False}


class ANIL(PinnedGradientLearner):
    """ANIL (Almost No Inner Loop): only the head adapts; the body is meta-learned as a feature extractor."""

    name = "anil"
    pinned = {"adapt": "head"}
    #: Raghu et al. 2020, "Rapid Learning or Feature Reuse?": MAML's Omniglot settings, head-only inner loop.
    defaults = {"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3, "first_order": False}
