"""Saving and loading learners: safetensors + JSON, exact round trips, no pickle."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from learner_episodes import gaussian_episodes
from metaauto.backbones import make_backbone
from metaauto.errors import LearnerError
from metaauto.learners import LEARNERS, load_learner, make_learner, read_learner_info, save_learner


def trained(name: str, model: nn.Module, batch, **options):
    learner = make_learner(name, model, **options)
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        learner.meta_loss(batch).backward()
        optimizer.step()
    return learner


@pytest.mark.parametrize("name", list(LEARNERS))
def test_round_trip_gives_identical_outputs(name, tmp_path):
    torch.manual_seed(0)
    metric = LEARNERS[name].family == "metric"
    batch = gaussian_episodes(3, ways=3, shots=2, queries=2, dim=16)
    learner = trained(name, make_backbone("mlp", (16,), None if metric else 3, hidden=(8,)), batch)
    save_learner(learner, tmp_path / "saved", extra={"step": 2})
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["learner.json", "model.safetensors"]
    loaded = load_learner(tmp_path / "saved")
    assert type(loaded) is type(learner) and loaded.hparams() == learner.hparams()
    assert loaded.state_dict().keys() == learner.state_dict().keys()
    for key, value in learner.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    expected, got = learner.forward_episodes(batch), loaded.forward_episodes(batch)
    assert torch.equal(expected.query_output, got.query_output)
    assert read_learner_info(tmp_path / "saved")["extra"] == {"step": 2}


def test_conv4_learner_round_trip(tmp_path):
    torch.manual_seed(0)
    learner = make_learner("maml", make_backbone("conv4", (1, 28, 28), 5, width=4))
    save_learner(learner, tmp_path)
    info = json.loads((tmp_path / "learner.json").read_text())
    assert info["learner"] == "maml" and info["backbone"]["name"] == "conv4" and info["backbone"]["width"] == 4
    x = torch.randn(6, 1, 28, 28)
    assert torch.equal(load_learner(tmp_path).model(x), learner.model(x))


class UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(x)


def test_user_models_must_be_supplied_at_load(tmp_path):
    learner = make_learner("anil", UserNet())
    save_learner(learner, tmp_path)
    with pytest.raises(LearnerError, match=r"wraps a .*UserNet that was not built by make_backbone.*pass the module as load_learner\(directory, model=\.\.\.\)"):
        load_learner(tmp_path)
    loaded = load_learner(tmp_path, model=UserNet())
    assert torch.equal(loaded.model.head.weight, learner.model.head.weight)


class WiderUserNet(UserNet):
    def __init__(self) -> None:
        super().__init__()
        self.extra = nn.Linear(3, 3)


def test_loading_is_strict(tmp_path):
    save_learner(make_learner("maml", UserNet()), tmp_path)
    with pytest.raises(LearnerError, match=r"does not match the rebuilt maml learner: missing \['model.extra.bias', 'model.extra.weight'\]"):
        load_learner(tmp_path, model=WiderUserNet())


def test_missing_or_foreign_directories_are_explained(tmp_path):
    with pytest.raises(LearnerError, match="learner.json does not exist"):
        load_learner(tmp_path)
    (tmp_path / "learner.json").write_text("{}")
    with pytest.raises(LearnerError, match="lacks learner, hparams, backbone"):
        load_learner(tmp_path)
    (tmp_path / "learner.json").write_text(json.dumps({"learner": "maml", "hparams": {}, "backbone": None}))
    with pytest.raises(LearnerError, match="model.safetensors does not exist"):
        load_learner(tmp_path, model=UserNet())


def test_unserialisable_extra_writes_nothing(tmp_path):
    with pytest.raises(LearnerError, match="extra must be JSON-serialisable"):
        save_learner(make_learner("maml", UserNet()), tmp_path / "out", extra={"when": object()})
    assert not (tmp_path / "out").exists()
