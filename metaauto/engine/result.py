"""What a meta-training run returns; its own module because both the loop (:mod:`metaauto.engine.training`)
and the callbacks it calls (:mod:`metaauto.engine.callbacks`) use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metaauto.engine.config import TrainConfig
from metaauto.engine.history import History


@dataclass
class TrainResult:
    """The outcome of :func:`meta_train`.

    ``learner`` is the trained learner itself (updated in place); when validation ran, it holds the
    weights of ``best_step``. ``stop_reason`` is ``"completed"``, ``"early_stopping"`` or the reason a
    callback gave to :meth:`RunState.request_stop`.
    """

    learner: Any
    config: TrainConfig
    history: History
    final_step: int
    best_step: int | None
    best_value: float | None
    stop_reason: str
    resumed_from: int | None
    device: str
    precision: str
    digest: str
    wall_time_s: float

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable account of the run (config, history, best validation, timings)."""
        return {
            "config": self.config.to_dict(),
            "learner": getattr(self.learner, "name", type(self.learner).__name__),
            "learner_hparams": self.learner.hparams() if hasattr(self.learner, "hparams") else {},
            "metric": self.history.metric,
            "final_step": self.final_step,
            "best_step": self.best_step,
            "best_value": self.best_value,
            "stop_reason": self.stop_reason,
            "resumed_from": self.resumed_from,
            "device": self.device,
            "precision": self.precision,
            "digest": self.digest,
            "wall_time_s": self.wall_time_s,
            "history": self.history.to_dict(),
        }
