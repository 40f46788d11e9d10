"""Settings of one meta-training run, and the digest that ties a checkpoint to them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from metaauto.errors import TrainingError

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("none", "cosine")

#: fields that change where or how visibly a run happens but not the numbers it produces, so a run may be
#: resumed with different values (on another device, with the progress bar off, ...)
_BOOKKEEPING_FIELDS = frozenset({"device", "progress", "checkpoint_dir", "checkpoint_every", "resume", "log_every"})

# Independent seed streams derived from ``TrainConfig.seed``.
TRAIN_STREAM = 0
VAL_STREAM = 1


@dataclass
class TrainConfig:
    """Everything :func:`~metaauto.engine.meta_train` needs besides the learner and the collection.

    Episodes: ``ways``-way (ignored for regression) ``shots``-shot with ``queries`` query examples per
    class (per task for regression), ``meta_batch_size`` tasks per meta-update.

    Validation: every ``val_every`` steps (and after the last one) the learner is scored on the same
    ``val_tasks`` episodes of the ``"val"`` split; ``val_every=0`` disables validation, and with it early
    stopping and best-weight restoring. ``patience`` counts validations without an improvement of more
    than ``min_delta`` over the best value so far.

    Checkpoints: every ``checkpoint_every`` steps into ``checkpoint_dir``; ``resume=True`` continues from
    the checkpoint there (or starts afresh when there is none).
    """

    ways: int | None = 5
    shots: int = 1
    queries: int = 15
    meta_batch_size: int = 16
    meta_steps: int = 1000
    meta_lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "none"
    grad_clip: float | None = None
    val_every: int = 100
    val_tasks: int = 100
    eval_batch_size: int | None = None
    patience: int | None = None
    min_delta: float = 0.0
    log_every: int = 1
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int = 100
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ("shots", "queries", "meta_batch_size", "meta_steps", "val_tasks", "log_every", "checkpoint_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise TrainingError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.ways is not None and self.ways < 2:
            raise TrainingError(f"TrainConfig.ways must be >= 2 (or None for regression), got {self.ways!r}")
        if self.val_every < 0:
            raise TrainingError(f"TrainConfig.val_every must be >= 0 (0 disables validation), got {self.val_every!r}")
        if self.meta_lr <= 0:
            raise TrainingError(f"TrainConfig.meta_lr must be > 0, got {self.meta_lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise TrainingError(f"unknown optimizer {self.optimizer!r}; expected one of {OPTIMIZERS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise TrainingError(f"unknown lr_schedule {self.lr_schedule!r}; expected one of {LR_SCHEDULES}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise TrainingError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if self.patience is not None and self.patience < 1:
            raise TrainingError(f"TrainConfig.patience must be >= 1 or None, got {self.patience!r}")
        if self.min_delta < 0:
            raise TrainingError(f"TrainConfig.min_delta must be >= 0, got {self.min_delta!r}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise TrainingError(f"TrainConfig.eval_batch_size must be >= 1 or None, got {self.eval_batch_size!r}")

    @property
    def validates(self) -> bool:
        return self.val_every > 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["checkpoint_dir"] is not None:
            data["checkpoint_dir"] = str(data["checkpoint_dir"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainingError(f"unknown TrainConfig fields {unknown}")
        return cls(**data)

    def trajectory(self) -> dict[str, Any]:
        """The fields that determine the numbers a run produces (what a resumed run must share)."""
        return {k: v for k, v in self.to_dict().items() if k not in _BOOKKEEPING_FIELDS}


def run_identity(config: TrainConfig, learner_name: str, learner_hparams: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed: the trajectory settings, learner and data."""
    return {
        **config.trajectory(),
        "learner": learner_name,
        "learner_hparams": learner_hparams,
        "collection_fingerprint": fingerprint,
    }


def digest(identity: dict[str, Any]) -> str:
    payload = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def derive_seed(seed: int, stream: int, index: int = 0) -> int:
    """A 31-bit seed for item ``index`` of ``stream``, decorrelated from neighbouring seeds and indices.

    Episodes of step ``t`` are sampled with ``derive_seed(seed, TRAIN_STREAM, t)``, which is what makes a
    resumed run see exactly the episodes the uninterrupted one would have seen.
    """
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(stream), int(index)]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)
