"""Crash-safe training checkpoints.

A checkpoint holds everything the next step depends on: learner, optimiser, scheduler and loss-scaler
state, the step, torch's RNG state, the history and the best weights so far. Episodes are a pure
function of ``(seed, step)`` and need no state of their own. Together this makes a resumed run
bit-for-bit identical to an uninterrupted one.

Files are written to a temporary name and moved into place with :func:`os.replace`, so a crash while
saving leaves the previous checkpoint intact. They contain only tensors and plain Python values and
are read back with ``torch.load(weights_only=True)``: loading a checkpoint never runs pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from metaauto.errors import TrainingError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def checkpoint_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / CHECKPOINT_NAME


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (tensors and plain values only) to ``directory/checkpoint.pt``."""
    path = checkpoint_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format": FORMAT_VERSION, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The checkpoint in ``directory``, or ``None`` when there is none; tensors are mapped to the CPU."""
    path = checkpoint_path(directory)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise TrainingError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise TrainingError(f"{path} is not a metaauto checkpoint (format {FORMAT_VERSION})")
    return state


def describe_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """``"meta_lr: 0.001 -> 0.002; seed: 0 -> 1"`` for the settings that differ."""
    keys = sorted(set(saved) | set(current))
    diffs = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
    return "; ".join(diffs) or "(settings equal, digest differs)"
