"""Device and precision selection; the mixed-precision paths run on the CPU too."""

from __future__ import annotations

import pytest
import torch

from metaauto.backbones import make_backbone
from metaauto.engine import TrainConfig, meta_train, resolve_device, resolve_precision
from metaauto.errors import TrainingError
from metaauto.learners import make_learner
from metaauto.tasks import load_collection


def test_auto_device_is_cuda_only_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(TrainingError, match="unknown device"):
        resolve_device("tpu-please")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(TrainingError, match="CUDA is not available"):
        resolve_device("cuda")


def test_precision_choices(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not resolve_precision("auto", cpu).enabled  # no autocast on the CPU by default
    assert resolve_precision("off", cuda).name == "fp32"
    bf16 = resolve_precision("bf16", cpu)
    assert bf16.dtype == torch.bfloat16 and not bf16.use_grad_scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cuda).name == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    fp16 = resolve_precision("auto", cuda)
    assert fp16.dtype == torch.float16 and fp16.use_grad_scaler  # fp16 always scales the loss
    with pytest.raises(TrainingError, match="amp"):
        resolve_precision("fp8", cpu)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_runs_on_cpu(data_dir, amp):
    coll = load_collection("omniglot", data_dir=data_dir)
    torch.manual_seed(0)
    learner = make_learner("protonet", make_backbone("conv4", coll.input_shape, width=8))
    config = TrainConfig(ways=5, shots=1, queries=2, meta_batch_size=2, meta_steps=3, val_every=3, val_tasks=4,
                         grad_clip=1.0, amp=amp, device="cpu", progress=False)
    result = meta_train(learner, coll, config)
    assert result.precision == amp
    assert all(torch.isfinite(torch.tensor(r.loss)) for r in result.history.train)
    assert all(p.dtype == torch.float32 for p in learner.parameters())  # autocast never casts the weights
