"""The throughput benchmark compares like with like: each per-task reference loop computes the same
meta-loss and meta-gradients as the metaauto learner it is timed against.

Checked in float64 on tiny episodes, so float32 noise cannot hide a real difference (or fake one).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `benchmarks/` is not part of the installed package
    sys.path.insert(0, str(REPO))

from benchmarks.reference_loop import reference_step  # noqa: E402
from benchmarks.throughput import RTOL_64, check_equivalence, random_batch  # noqa: E402
from metaauto.backbones import make_backbone  # noqa: E402
from metaauto.learners import LEARNERS, make_learner  # noqa: E402

WAYS = 3

def _learner(name: str, backbone: str):
    torch.manual_seed(0)
    out = WAYS if LEARNERS[name].family == "gradient" else None
    options = {"width": 8} if backbone == "conv4" else {"hidden": (16, 16)}
    return make_learner(name, make_backbone(backbone, input_shape=(1, 16, 16), out_features=out, **options))


def _batch():
    batch = random_batch(tasks=3, ways=WAYS, shots=1, queries=2, seed=0)
    # conv4 needs at least 16x16 pixels; the harness's batches are 28x28
    return type(batch)(
        batch.support_x[..., :16, :16], batch.support_y, batch.query_x[..., :16, :16], batch.query_y,
        batch.task_type, batch.ways, batch.shots,
    )


@pytest.mark.parametrize("name", list(LEARNERS))
def test_reference_loop_matches_learner_without_batchnorm(name):
    """On a network without cross-example coupling every reference must agree to float64 precision."""
    result = check_equivalence(_learner(name, "mlp"), _batch())
    assert result["loss_rel_error"] <= RTOL_64, result
    assert result["grad_rel_error"] <= RTOL_64, result


@pytest.mark.parametrize("name", list(LEARNERS))
def test_reference_loop_matches_learner_on_conv4(name):
    """The benchmark's backbone, whose BatchNorm couples the examples forwarded together: the learners must
    normalise per task (as the loop does) and get exact second-order gradients through BatchNorm."""
    result = check_equivalence(_learner(name, "conv4"), _batch())
    assert result["ok"], result


def test_reference_accumulates_into_the_learners_parameters():
    """The loop trains the very tensors the learner trains, including the learner's own (Meta-SGD rates)."""
    learner = _learner("metasgd", "mlp")
    learner.zero_grad(set_to_none=True)
    loss = reference_step(learner)(learner, _batch())
    assert loss > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.parameters())
