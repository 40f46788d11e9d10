"""Where training runs and in which precision.

``"auto"`` means: the GPU when there is one, and mixed precision only there. On CUDA, bfloat16 is
preferred because it keeps float32's exponent range and needs no loss scaling; older GPUs without
bf16 fall back to float16 with a :class:`torch.amp.GradScaler`, which rescales the loss so that small
gradients do not underflow. On the CPU, autocast is off by default: it rarely speeds up the small
convolutions of few-shot models and it changes the numbers a CPU user would compare against papers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from metaauto.errors import TrainingError

AMP_CHOICES = ("auto", "off", "bf16", "fp16")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else must be usable here."""
    if isinstance(spec, torch.device):
        device = spec
    elif spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(spec)
        except RuntimeError as exc:
            raise TrainingError(f"unknown device {spec!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {spec!r} was requested but CUDA is not available on this machine")
    return device


@dataclass(frozen=True)
class Precision:
    """How the forward pass is autocast, and whether the loss is scaled before ``backward``."""

    enabled: bool
    dtype: torch.dtype | None = None
    use_grad_scaler: bool = False

    @property
    def name(self) -> str:
        if not self.enabled:
            return "fp32"
        return "bf16" if self.dtype == torch.bfloat16 else "fp16"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """A scaler that is a no-op (``enabled=False``) unless float16 needs it."""
        return torch.amp.GradScaler(device.type, enabled=self.use_grad_scaler)


def resolve_precision(amp: str | bool, device: torch.device) -> Precision:
    """Turn the ``amp`` setting into a :class:`Precision` for ``device``.

    ``"auto"``: bf16 on a CUDA device that supports it, fp16 with loss scaling on one that does not,
    full precision elsewhere. ``"bf16"``/``"fp16"`` force a dtype (fp16 always with a scaler);
    ``"off"`` (or ``False``) disables autocast.
    """
    if amp is True:
        amp = "auto"
    elif amp is False:
        amp = "off"
    if amp not in AMP_CHOICES:
        raise TrainingError(f"unknown amp setting {amp!r}; expected one of {AMP_CHOICES}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return Precision(enabled=False)
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "bf16":
        return Precision(enabled=True, dtype=torch.bfloat16)
    return Precision(enabled=True, dtype=torch.float16, use_grad_scaler=True)


@contextlib.contextmanager
def forked_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed torch's generators for the block and restore the caller's streams afterwards.

    Training must be a function of ``config.seed`` alone, yet it should not leave the global RNG in a
    state that depends on how long it ran.
    """
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.manual_seed(seed)
        yield


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
