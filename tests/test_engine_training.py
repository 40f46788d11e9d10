"""meta_train on real data: learning, determinism, validation, early stopping and callbacks."""

from __future__ import annotations

import pytest
import torch

from metaauto.backbones import make_backbone
from metaauto.engine import Callback, TrainConfig, meta_train
from metaauto.errors import TrainingError
from metaauto.evaluation import evaluate
from metaauto.learners import make_learner
from metaauto.tasks import load_collection


@pytest.fixture(scope="module")
def omniglot(data_dir):
    return load_collection("omniglot", data_dir=data_dir)


@pytest.fixture(scope="module")
def sinusoid():
    return load_collection("sinusoid")


def protonet(coll, width=16, seed=0):
    torch.manual_seed(seed)
    return make_learner("protonet", make_backbone("conv4", coll.input_shape, width=width))


def maml(coll, seed=0):
    torch.manual_seed(seed)
    return make_learner("maml", make_backbone("mlp", coll.input_shape, 1), inner_lr=0.01)


def sine_config(**overrides) -> TrainConfig:
    settings = dict(ways=None, shots=10, queries=10, meta_batch_size=10, meta_steps=20, meta_lr=1e-2,
                    val_every=5, val_tasks=20, progress=False)
    return TrainConfig(**{**settings, **overrides})


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_protonet_omniglot_learns_far_above_chance(omniglot):
    learner = protonet(omniglot)
    config = TrainConfig(ways=5, shots=1, queries=5, meta_batch_size=2, meta_steps=50, meta_lr=3e-3,
                         val_every=25, val_tasks=20, progress=False)
    result = meta_train(learner, omniglot, config)
    assert result.final_step == 50 and result.stop_reason == "completed"
    assert [r.step for r in result.history.train] == list(range(1, 51))
    assert [r.step for r in result.history.val] == [25, 50]
    test = evaluate(learner, omniglot, ways=5, shots=1, queries=5, tasks=100, seed=0)
    assert test.tasks == len(test.per_task) == 100
    assert test.mean > 0.6, test  # chance is 0.2


def test_maml_sinusoid_mse_falls_well_below_initial(sinusoid):
    learner = maml(sinusoid)
    initial = evaluate(learner, sinusoid, split="val", ways=None, shots=10, queries=10, tasks=50).mean
    result = meta_train(learner, sinusoid, sine_config(meta_steps=150, val_every=50, val_tasks=50))
    assert result.history.metric == "mse"
    assert result.best_value < 0.5 * initial, (initial, result.history.val)
    # the restored weights are the best ones: re-validating reproduces the best value
    assert result.best_step == max(result.history.val, key=lambda r: -r.metric).step


def test_same_seed_gives_bitwise_identical_runs(sinusoid):
    a, b, c = maml(sinusoid), maml(sinusoid), maml(sinusoid)
    ra = meta_train(a, sinusoid, sine_config(grad_clip=1.0, lr_schedule="cosine"))
    rb = meta_train(b, sinusoid, sine_config(grad_clip=1.0, lr_schedule="cosine"))
    rc = meta_train(c, sinusoid, sine_config(grad_clip=1.0, lr_schedule="cosine", seed=1))
    assert states_equal(a, b)
    assert ra.history.without_timings() == rb.history.without_timings()
    assert not states_equal(a, c)
    # cosine schedule: the recorded learning rate decays to (almost) zero
    lrs = [r.lr for r in ra.history.train]
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] < 1e-3


def test_training_leaves_global_rng_untouched(sinusoid):
    torch.manual_seed(123)
    expected = torch.rand(3)
    learner = maml(sinusoid)
    torch.manual_seed(123)
    meta_train(learner, sinusoid, sine_config(meta_steps=3))
    assert torch.equal(torch.rand(3), expected)


def test_early_stopping_stops_and_restores_best_weights(sinusoid):
    snapshots = {}

    class Snapshot(Callback):
        def on_validation(self, run, record):
            snapshots[record.step] = {k: v.clone() for k, v in run.learner.state_dict().items()}

    learner = maml(sinusoid)
    # min_delta larger than any possible gain: only the first validation counts as an improvement
    config = sine_config(meta_steps=100, val_every=2, patience=2, min_delta=1e9)
    result = meta_train(learner, sinusoid, config, callbacks=[Snapshot()])
    assert result.stop_reason == "early_stopping"
    assert result.final_step == 6 and [r.step for r in result.history.val] == [2, 4, 6]
    assert result.best_step == 2 and [r.is_best for r in result.history.val] == [True, False, False]
    assert all(torch.equal(v, snapshots[2][k]) for k, v in learner.state_dict().items())


def test_callbacks_see_each_logged_step_and_validation(sinusoid):
    events = []

    class Recorder(Callback):
        def on_train_start(self, run):
            events.append(("start", run.step))

        def on_step(self, run, record):
            assert run.step == record.step
            events.append(("step", record.step))

        def on_validation(self, run, record):
            assert run.best_value is not None
            events.append(("val", record.step))

        def on_train_end(self, run, result):
            events.append(("end", result.final_step))

    meta_train(maml(sinusoid), sinusoid, sine_config(meta_steps=10, val_every=4, log_every=3), callbacks=[Recorder()])
    assert events == [
        ("start", 0), ("step", 3), ("val", 4), ("step", 6), ("val", 8), ("step", 9), ("step", 10), ("val", 10),
        ("end", 10),
    ]


def test_callback_exception_propagates_unchanged(sinusoid):
    class Pruned(Exception):
        pass

    class Pruner(Callback):
        def on_validation(self, run, record):
            raise Pruned(f"pruned at {record.step}")

    with pytest.raises(Pruned, match="pruned at 5"):
        meta_train(maml(sinusoid), sinusoid, sine_config(progress=True), callbacks=[Pruner()])


def test_callback_can_request_a_graceful_stop(sinusoid):
    class StopAt3(Callback):
        def on_step(self, run, record):
            if record.step == 3:
                run.request_stop("enough")

    result = meta_train(maml(sinusoid), sinusoid, sine_config(), callbacks=[StopAt3()])
    assert result.final_step == 3 and result.stop_reason == "enough"
    # the run is validated where it stops, so the best weights account for the last step
    assert [r.step for r in result.history.val] == [3]


def test_bad_settings_are_refused_with_the_field_name(sinusoid, omniglot):
    with pytest.raises(TrainingError, match="meta_batch_size"):
        TrainConfig(meta_batch_size=0)
    with pytest.raises(TrainingError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(TrainingError, match="solves classification"):
        meta_train(protonet(omniglot, width=4), sinusoid, sine_config())
