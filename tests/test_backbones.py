"""The standard backbones: shapes, specs that rebuild them, and vmappability."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from metaauto.backbones import make_backbone
from metaauto.errors import LearnerError


def test_conv4_on_omniglot_shapes_gives_64_features():
    model = make_backbone("conv4", (1, 28, 28))
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 64)
    assert model.out_dim == model.embedding_dim == 64 and model.head is None
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 4 and all(c.out_channels == 64 and c.kernel_size == (3, 3) for c in convs)
    assert len(norms) == 4 and not any(n.track_running_stats for n in norms)


def test_conv4_head_and_width_and_larger_images():
    model = make_backbone("conv4", (3, 84, 84), out_features=5, width=32)
    assert model.embedding_dim == 32 * 5 * 5 and model.out_dim == 5
    assert model(torch.randn(2, 3, 84, 84)).shape == (2, 5)


def test_mlp_defaults_to_the_maml_sinusoid_network():
    model = make_backbone("mlp", (1,), out_features=1)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(1, 40), (40, 40), (40, 1)]
    assert model(torch.randn(7, 1)).shape == (7, 1)
    assert make_backbone("mlp", (2, 3), width=16)(torch.randn(4, 2, 3)).shape == (4, 16)


@pytest.mark.parametrize(
    ("name", "shape", "options"),
    [("conv4", (1, 28, 28), {"out_features": 5, "width": 8}), ("mlp", (4,), {"hidden": (3, 5)}), ("conv4", (1, 28, 28), {})],
)
def test_spec_rebuilds_the_same_architecture(name, shape, options):
    torch.manual_seed(0)
    model = make_backbone(name, shape, **options)
    rebuilt = make_backbone(**model.spec)
    assert rebuilt.spec == model.spec
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_conv4_is_vmappable_over_per_task_weights():
    model = make_backbone("conv4", (1, 28, 28), 5, width=4)
    params = {k: torch.stack([v, v + 0.01]) for k, v in model.named_parameters()}
    x = torch.randn(2, 3, 1, 28, 28)
    batched = vmap(lambda p, xi: functional_call(model, p, (xi,)))(params, x)
    for t in range(2):
        single = functional_call(model, {k: v[t] for k, v in params.items()}, (x[t],))
        torch.testing.assert_close(batched[t], single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("resnet", (1, 28, 28)), {}, "unknown backbone 'resnet'; known backbones: conv4, mlp"),
        (("conv4", (28, 28)), {}, r"conv4 needs an image input shape \(channels, height, width\), got \(28, 28\)"),
        (("conv4", (1, 8, 8)), {}, "at least 16x16 pixels; got 8x8"),
        (("conv4", (1, 28, 28)), {"width": 0}, "conv4 width must be positive, got 0"),
        (("conv4", (1, 28, 28)), {"hidden": (4,)}, "conv4 has no hidden sizes"),
        (("mlp", (1,)), {"hidden": ()}, "mlp hidden sizes must be positive"),
        (("mlp", (1,)), {"hidden": (4,), "width": 3}, "either width= .* or hidden=, not both"),
        (("mlp", (1,)), {"out_features": 0}, "out_features must be positive or None"),
    ],
)
def test_bad_backbone_requests_raise(args, kwargs, message):
    with pytest.raises(LearnerError, match=message):
        make_backbone(*args, **kwargs)
