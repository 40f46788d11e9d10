"""Sinusoid regression family: shapes, the generating law, seeding and split streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metaauto.errors import CollectionError
from metaauto.tasks import SinusoidCollection, load_collection


def _fit_sine(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y = a sin x + b cos x``; returns amplitude, phase and the residual."""
    design = np.stack([np.sin(x), np.cos(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    amplitude, phase = math.hypot(a, b), math.atan2(-b, a)
    return amplitude, phase % (2 * math.pi), float(np.abs(design @ [a, b] - y).max())


def test_batch_shapes_and_generating_law() -> None:
    coll = load_collection("sinusoid")
    batch = coll.sample("train", shots=5, queries=7, tasks=16, seed=0)
    assert batch.support_x.shape == (16, 5, 1) and batch.query_y.shape == (16, 7, 1)
    assert batch.support_y.dtype == torch.float32 and batch.task_type == "regression"
    x = torch.cat([batch.support_x, batch.query_x], 1).squeeze(-1).double().numpy()
    y = torch.cat([batch.support_y, batch.query_y], 1).squeeze(-1).double().numpy()
    assert x.min() >= -5 and x.max() <= 5
    for t in range(16):  # support and query points of a task lie on one sine of the documented family
        amplitude, phase, residual = _fit_sine(x[t], y[t])
        assert residual < 1e-4 and 0.1 - 1e-4 <= amplitude <= 5 + 1e-4 and phase <= math.pi + 1e-4


def test_options_change_the_family_and_the_fingerprint() -> None:
    default = SinusoidCollection()
    narrow = SinusoidCollection(amplitude=(2.0, 2.0), phase=(0.0, 0.0), x_range=(0.0, 1.0))
    batch = narrow.sample(tasks=4, shots=3, queries=3)
    assert torch.allclose(batch.support_y, 2 * torch.sin(batch.support_x), atol=1e-5)
    assert batch.support_x.min() >= 0 and batch.support_x.max() <= 1
    assert narrow.fingerprint != default.fingerprint == SinusoidCollection().fingerprint


def test_seeds_and_splits_are_separate_streams() -> None:
    coll = SinusoidCollection()
    a, b = coll.sample("train", seed=1), coll.sample("train", seed=1)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)
    assert not torch.equal(a.support_y, coll.sample("train", seed=2).support_y)
    assert not torch.equal(a.support_y, coll.sample("val", seed=1).support_y)
    assert not torch.equal(coll.sample("val", seed=1).support_y, coll.sample("test", seed=1).support_y)


def test_pooled_points_and_summary() -> None:
    coll = SinusoidCollection()
    pooled = coll.pooled("train", max_examples=1234, seed=0)
    assert pooled.x.shape == (1234, 1) and pooled.y.shape == (1234, 1) and pooled.n_classes is None
    assert pooled.y.abs().max() <= 5
    assert coll.pooled().x.shape == (10_000, 1)
    assert coll.summary()["val"].extra["unbounded"] is True


def test_bad_options_and_requests_are_rejected() -> None:
    with pytest.raises(CollectionError, match=r"amplitude must be finite with low <= high"):
        SinusoidCollection(amplitude=(5.0, 0.1))
    with pytest.raises(CollectionError, match=r"x_range must be a \(low, high\) pair"):
        SinusoidCollection(x_range="wide")
    with pytest.raises(CollectionError, match="unknown split 'holdout'"):
        SinusoidCollection().sample("holdout")
    with pytest.raises(CollectionError, match="shots must be an integer >= 1"):
        SinusoidCollection().sample(shots=0)
