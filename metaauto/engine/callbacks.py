"""Hooks into a running meta-training loop.

Tracking (log each step and validation) and search (report a validation score, prune a hopeless trial)
both plug in here. A callback is any object with some of the ``on_*`` methods below; subclass
:class:`Callback` to inherit no-op defaults. A callback may stop training gracefully with
:meth:`RunState.request_stop`, or abort it by raising: the exception propagates out of
:func:`~metaauto.engine.meta_train` unchanged (Optuna's ``TrialPruned`` keeps its type), after the
progress bar has been closed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from metaauto.engine.config import TrainConfig
from metaauto.engine.history import History, StepRecord, ValidationRecord
from metaauto.engine.result import TrainResult


@dataclass
class RunState:
    """The live state a callback sees; ``step`` counts completed meta-updates."""

    config: TrainConfig
    learner: Any
    collection: Any
    history: History
    step: int = 0
    best_step: int | None = None
    best_value: float | None = None
    stop_reason: str | None = field(default=None)

    def request_stop(self, reason: str = "callback") -> None:
        """Finish after the current step (a checkpoint and best-weight restoring still happen)."""
        self.stop_reason = reason

    @property
    def stop_requested(self) -> bool:
        return self.stop_reason is not None


class Callback:
    """Base class with no-op hooks; override the ones you need."""

    def on_train_start(self, run: RunState) -> None:
        """Called once before the first step (also when resuming; ``run.step`` is then > 0)."""

    def on_step(self, run: RunState, record: StepRecord) -> None:
        """Called after every ``config.log_every``-th meta-update."""

    def on_validation(self, run: RunState, record: ValidationRecord) -> None:
        """Called after each validation; ``run.best_*`` already account for it."""

    def on_train_end(self, run: RunState, result: TrainResult) -> None:
        """Called once when training finishes without an exception."""


class TimeBudget(Callback):
    """Stops training gracefully (``stop_reason="time_budget"``) once ``seconds`` of training have passed.

    Steps, not wall time, are what a budget in meta-steps bounds; on a shared or slow machine a wall-clock
    cap is what keeps a job's duration predictable. The best validated weights are kept as usual.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def on_train_start(self, run: RunState) -> None:
        self.started = time.monotonic()

    def on_step(self, run: RunState, record: StepRecord) -> None:
        if self.seconds is not None and time.monotonic() - self.started >= self.seconds:
            run.request_stop("time_budget")


class CallbackList:
    """Dispatches a hook to every callback that defines it, in order."""

    def __init__(self, callbacks: Iterable[Any]) -> None:
        self.callbacks = list(callbacks)

    def __call__(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(*args)
