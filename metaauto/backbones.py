"""The standard few-shot networks, rebuildable from a small JSON spec.

Learners accept any :class:`torch.nn.Module`; these two exist so that the usual baselines need no user
code and so that a saved learner can rebuild its network from ``learner.json`` alone (``.spec``).

* ``conv4``: four blocks of ``conv3x3(width) -> BatchNorm -> ReLU -> maxpool2`` (Vinyals et al. 2016,
  Finn et al. 2017). BatchNorm keeps **no running statistics** (``track_running_stats=False``): it always
  normalises with the statistics of the batch it sees, as the MAML reference code does. That makes the
  network a pure function of its parameters, hence vmappable, and makes evaluation transductive over
  the examples forwarded together (a task's support set, or its query set).
* ``mlp``: fully connected ReLU network; the default hidden sizes ``(40, 40)`` are the MAML sinusoid net.

Both have an optional linear ``head`` (``out_features``); without it the network is an embedding for
metric learners. ``out_dim`` is the width of what ``forward`` returns (logits or embedding).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metaauto.errors import LearnerError

BACKBONES = ("conv4", "mlp")


class BatchStatNorm2d(nn.BatchNorm2d):
    """BatchNorm over the batch's own statistics, with the affine part applied outside ``F.batch_norm``.

    Numerically the same as ``nn.BatchNorm2d(track_running_stats=False)``. The split exists because, in
    torch 2.13, the second derivative of ``F.batch_norm(..., weight, bias)`` under ``vmap(grad(...))``
    is wrong when its input depends on the parameters (0.5-1.7% relative error on Conv4's MAML
    meta-gradient, even in float64; the conv biases before BatchNorm get non-zero gradients where the
    true value is 0). Normalising without affine and scaling by hand gives exact second-order MAML
    gradients (checked against finite differences and a per-task autograd loop in the tests).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps, affine=True, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.batch_norm(x, None, None, None, None, True, 0.0, self.eps)
        return z * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class Conv4(nn.Module):
    """Four conv blocks, flattened, then an optional linear head."""

    def __init__(self, input_shape: Sequence[int], out_features: int | None = None, width: int = 64) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise LearnerError(f"conv4 needs an image input shape (channels, height, width), got {tuple(input_shape)}")
        channels, height, width_px = (int(v) for v in input_shape)
        if min(height, width_px) < 16:
            raise LearnerError(
                f"conv4 halves the image four times, so it needs at least 16x16 pixels; got {height}x{width_px}"
            )
        if width < 1:
            raise LearnerError(f"conv4 width must be positive, got {width}")
        layers: list[nn.Module] = []
        for block in range(4):
            layers += [
                nn.Conv2d(channels if block == 0 else width, width, kernel_size=3, padding=1),
                BatchStatNorm2d(width),
                # max-pooling before the ReLU computes exactly relu->pool (ReLU is monotone) with the
                # ReLU and its backward on a quarter of the values
                nn.MaxPool2d(2),
                nn.ReLU(),
            ]
            height, width_px = height // 2, width_px // 2
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.embedding_dim = width * height * width_px
        self.head = nn.Linear(self.embedding_dim, out_features) if out_features is not None else None
        self.out_dim = out_features if out_features is not None else self.embedding_dim
        self.spec: dict[str, Any] = {
            "name": "conv4",
            "input_shape": [channels, int(input_shape[1]), int(input_shape[2])],
            "out_features": out_features,
            "width": width,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        return self.head(z) if self.head is not None else z


class MLP(nn.Module):
    """Flatten, ``Linear -> ReLU`` per hidden size, then an optional linear head."""

    def __init__(
        self, input_shape: Sequence[int], out_features: int | None = None, hidden: Sequence[int] = (40, 40)
    ) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden]
        if not hidden or min(hidden) < 1:
            raise LearnerError(f"mlp hidden sizes must be positive, got {hidden}")
        in_features = 1
        for dim in input_shape:
            in_features *= int(dim)
        layers: list[nn.Module] = [nn.Flatten()]
        for size in hidden:
            layers += [nn.Linear(in_features, size), nn.ReLU()]
            in_features = size
        self.features = nn.Sequential(*layers)
        self.embedding_dim = hidden[-1]
        self.head = nn.Linear(in_features, out_features) if out_features is not None else None
        self.out_dim = out_features if out_features is not None else self.embedding_dim
        self.spec = {
            "name": "mlp",
            "input_shape": [int(v) for v in input_shape],
            "out_features": out_features,
            "hidden": hidden,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        return self.head(z) if self.head is not None else z


def make_backbone(
    name: str,
    input_shape: Sequence[int],
    out_features: int | None = None,
    *,
    width: int | None = None,
    hidden: Sequence[int] | None = None,
) -> nn.Module:
    """Build a backbone by name; ``make_backbone(**model.spec)`` rebuilds the same architecture.

    ``width`` is the channel count of ``conv4`` (default 64) or, for ``mlp``, the size of each of its
    two hidden layers; ``hidden`` gives ``mlp`` arbitrary hidden sizes (default ``(40, 40)``).
    """
    if out_features is not None and out_features < 1:
        raise LearnerError(f"out_features must be positive or None (embedding only), got {out_features}")
    if name == "conv4":
        if hidden is not None:
            raise LearnerError("conv4 has no hidden sizes; use width= for its channel count")
        return Conv4(input_shape, out_features, width=64 if width is None else width)
    if name == "mlp":
        if hidden is None:
            hidden = (40, 40) if width is None else (width, width)
        elif width is not None:
            raise LearnerError("give mlp either width= (two hidden layers of that size) or hidden=, not both")
        return MLP(input_shape, out_features, hidden=hidden)
    raise LearnerError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}")
