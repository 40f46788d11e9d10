"""The contract every learner (gradient-based or metric-based) fulfils.

A learner is an :class:`torch.nn.Module` that *wraps* the user's model: ``learner.model`` is the
module passed in, its parameters are the meta-parameters, and learners with parameters of their own
(Meta-SGD's learning rates, the Relation network's relation module) register them on the learner, so
``learner.parameters()`` is always the full set an optimiser should see.
"""

from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, TypeVar

import torch
from torch import nn

from metaauto.errors import LearnerError
from metaauto.tasks.batch import TaskBatch

T = TypeVar("T")

#: tasks per vmap chunk that ``chunk_size="auto"`` uses on the CPU (see :meth:`Learner.vmap_chunk_size`)
CPU_CHUNK_SIZE = 4


def running_stats_module(model: nn.Module) -> str | None:
    """The first normalisation layer that updates running statistics in place (cannot be vmapped)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            return f"{name or '<model>'} ({type(module).__name__} with track_running_stats=True)"
    return None


@dataclass
class EpisodeOutput:
    """What a learner computes on a meta-batch.

    ``loss`` is the mean over tasks of the mean query loss and is differentiable w.r.t. the
    meta-parameters; ``query_output`` (``[tasks, Q, ways]`` logits or ``[tasks, Q, out_dim]`` values)
    and ``per_task_metric`` (accuracy or MSE per task, ``[tasks]``) are detached.
    """

    loss: torch.Tensor
    query_output: torch.Tensor
    per_task_metric: torch.Tensor


class Learner(nn.Module, abc.ABC):
    #: registry name, e.g. ``"maml"``
    name: ClassVar[str]
    #: ``"gradient"`` or ``"metric"``
    family: ClassVar[str]
    #: task types the learner can solve
    task_types: ClassVar[tuple[str, ...]]

    def __init__(self, model: nn.Module, vectorize: bool | str = "auto", chunk_size: int | str | None = "auto") -> None:
        super().__init__()
        if vectorize not in ("auto", True, False):
            raise LearnerError(f"vectorize must be 'auto', True or False, got {vectorize!r}")
        if chunk_size not in ("auto", None) and (
            isinstance(chunk_size, (bool, str)) or int(chunk_size) != chunk_size or chunk_size < 1
        ):
            raise LearnerError(f"chunk_size must be a positive integer, 'auto' or None, got {chunk_size!r}")
        self.model = model
        self.vectorize = vectorize
        self.chunk_size = chunk_size
        #: how the tasks of a meta-batch are executed: ``"vmap"`` or ``"loop"``
        self.execution: str = "vmap"
        #: why the learner fell back to ``"loop"`` (empty when vectorised)
        self.execution_reason: str = ""
        self._vmap_verified = False
        self._choose_execution(model)

    # ------------------------------------------------------------------------------ task execution
    # Vectorising over tasks is the default; a module that cannot be vmapped runs one task at a time,
    # and that choice is announced (warning) and recorded (execution/execution_reason), never silent.

    def _choose_execution(self, model: nn.Module) -> None:
        if self.vectorize is False:
            self.execution, self.execution_reason = "loop", "vectorize=False"
            return
        blocker = running_stats_module(model)
        if blocker is None:
            return
        reason = f"{blocker} updates its running statistics in place, which torch.func.vmap cannot batch"
        if self.vectorize is True:
            raise LearnerError(f"vectorize=True but the model cannot be vmapped: {reason}; use vectorize='auto' or False")
        self._fall_back(reason)

    def _fall_back(self, reason: str) -> None:
        self.execution, self.execution_reason = "loop", reason
        warnings.warn(
            f"{self.name}: running the tasks of each meta-batch one at a time (slower): {reason}",
            RuntimeWarning,
            stacklevel=4,
        )

    def vmap_chunk_size(self, device: torch.device) -> int | None:
        """Tasks per vmap chunk on ``device``; ``None`` runs the whole meta-batch at once.

        ``"auto"`` vectorises the whole meta-batch on CUDA, where one large kernel per operation is
        what makes vmap fast, and runs chunks of ``CPU_CHUNK_SIZE`` tasks on the CPU, where the
        activations of a whole meta-batch (Conv4, 32 tasks: about 2.5 GiB) stream from main memory
        at every layer and run slower than task-sized pieces that stay in cache (measured in
        ``benchmarks/throughput.py``). Chunking also bounds peak memory.
        """
        if self.chunk_size == "auto":
            return None if device.type == "cuda" else CPU_CHUNK_SIZE
        return self.chunk_size

    def _run_tasks(self, vectorized: Callable[[], T], looped: Callable[[], T]) -> T:
        """``vectorized()`` when the learner vmaps, else ``looped()``; a first vmap failure falls back."""
        if self.execution == "vmap":
            try:
                result = vectorized()
                self._vmap_verified = True
                return result
            except (RuntimeError, NotImplementedError) as err:
                if self._vmap_verified:
                    raise
                reason = f"{type(self.model).__name__} raised under torch.func.vmap: {str(err).splitlines()[0]}"
                if self.vectorize is True:
                    raise LearnerError(f"vectorize=True but the model cannot be vmapped: {reason}") from err
                self._fall_back(reason)
        return looped()

    @abc.abstractmethod
    def forward_episodes(self, batch: TaskBatch, *, inner_steps: int | None = None) -> EpisodeOutput:
        """Adapt on each task's support set and score its query set, for all tasks of ``batch``."""

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        """Mean over tasks of the mean query loss after adaptation; call ``.backward()`` on it."""
        return self.forward_episodes(batch).loss

    @abc.abstractmethod
    def adapt(
        self, support_x: torch.Tensor, support_y: torch.Tensor, *, inner_steps: int | None = None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Adapt to one task (no task dimension) and return ``predict(query_x) -> logits/values``."""

    @abc.abstractmethod
    def hparams(self) -> dict[str, Any]:
        """JSON-serialisable keyword arguments that rebuild this learner with ``make_learner``."""
