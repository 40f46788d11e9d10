"""Checkpoints: atomic, pickle-free, and resuming after a crash reproduces the uninterrupted run exactly."""

from __future__ import annotations

import pytest
import torch

from metaauto.backbones import make_backbone
from metaauto.engine import Callback, TrainConfig, meta_train
from metaauto.engine.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from metaauto.errors import TrainingError
from metaauto.learners import make_learner
from metaauto.tasks import load_collection

STEPS = 12


class Crash(RuntimeError):
    pass


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, run, record):
        if record.step == self.step:
            raise Crash(f"simulated crash at step {record.step}")


@pytest.fixture(scope="module")
def omniglot(data_dir):
    return load_collection("omniglot", data_dir=data_dir)


def fresh_learner(coll, algorithm: str):
    torch.manual_seed(0)
    if algorithm == "protonet":  # conv4 with BatchNorm, Adam
        return make_learner("protonet", make_backbone("conv4", coll.input_shape, width=8))
    return make_learner("metasgd", make_backbone("conv4", coll.input_shape, coll.output_dim(5), width=8))


def config(checkpoint_dir, **overrides) -> TrainConfig:
    settings = dict(ways=5, shots=1, queries=2, meta_batch_size=2, meta_steps=STEPS, meta_lr=3e-3,
                    lr_schedule="cosine", grad_clip=1.0, val_every=4, val_tasks=4, patience=5,
                    checkpoint_dir=checkpoint_dir, checkpoint_every=5, progress=False)
    return TrainConfig(**{**settings, **overrides})


@pytest.mark.parametrize("algorithm", ["protonet", "metasgd"])
def test_resume_after_crash_is_bitwise_identical(omniglot, tmp_path, algorithm):
    reference = fresh_learner(omniglot, algorithm)
    expected = meta_train(reference, omniglot, config(tmp_path / "reference"))

    learner = fresh_learner(omniglot, algorithm)
    with pytest.raises(Crash):
        meta_train(learner, omniglot, config(tmp_path / "run"), callbacks=[CrashAt(8)])
    assert load_checkpoint(tmp_path / "run")["step"] == 5  # the last checkpoint before the crash

    restarted = fresh_learner(omniglot, algorithm)  # a new process would rebuild the learner from scratch
    resumed = meta_train(restarted, omniglot, config(tmp_path / "run", resume=True))
    assert resumed.resumed_from == 5 and resumed.final_step == STEPS
    ref_state, state = reference.state_dict(), restarted.state_dict()
    assert ref_state.keys() == state.keys()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)
    assert resumed.history.without_timings() == expected.history.without_timings()
    assert (resumed.best_step, resumed.best_value) == (expected.best_step, expected.best_value)


def test_resume_with_other_settings_names_the_difference(omniglot, tmp_path):
    meta_train(fresh_learner(omniglot, "protonet"), omniglot, config(tmp_path, meta_steps=2))
    with pytest.raises(TrainingError, match=r"meta_lr: 0\.003 -> 0\.01"):
        meta_train(fresh_learner(omniglot, "protonet"), omniglot, config(tmp_path, meta_steps=2, meta_lr=1e-2, resume=True))
    with pytest.raises(TrainingError, match="already holds a checkpoint"):
        meta_train(fresh_learner(omniglot, "protonet"), omniglot, config(tmp_path, meta_steps=2))
    # bookkeeping settings may change: a finished run resumes to its saved end without training further
    again = meta_train(
        fresh_learner(omniglot, "protonet"), omniglot, config(tmp_path, meta_steps=2, resume=True, checkpoint_every=1)
    )
    assert again.resumed_from == 2 and len(again.history.train) == 2


def test_checkpoint_is_atomic_and_loads_without_unpickling(tmp_path):
    state = {"step": 3, "weights": torch.arange(4.0), "history": {"metric": "mse", "train": [], "val": []}}
    path = save_checkpoint(tmp_path, state)
    assert path == checkpoint_path(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == 3 and torch.equal(loaded["weights"], torch.arange(4.0))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path)
    assert load_checkpoint(tmp_path / "missing") is None
