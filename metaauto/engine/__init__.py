"""Meta-training: the loop, its configuration, callbacks, checkpoints and device handling."""

from metaauto.engine.callbacks import Callback, RunState, TimeBudget
from metaauto.engine.checkpoint import load_checkpoint, save_checkpoint
from metaauto.engine.config import TrainConfig, derive_seed
from metaauto.engine.device import Precision, resolve_device, resolve_precision
from metaauto.engine.history import History, StepRecord, ValidationRecord
from metaauto.engine.result import TrainResult
from metaauto.engine.training import meta_train

__all__ = [
    "Callback",
    "TimeBudget",
    "History",
    "Precision",
    "RunState",
    "StepRecord",
    "TrainConfig",
    "TrainResult",
    "ValidationRecord",
    "derive_seed",
    "load_checkpoint",
    "meta_train",
    "resolve_device",
    "resolve_precision",
    "save_checkpoint",
]
