"""A tracked meta-training run holds what the MLflow UI needs: params, stepped metrics, dataset,
artifacts, model and readable tags; failures end FAILED; logging is safe from threads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import mlflow
import pytest

import _mlflow_support as support


@pytest.fixture(scope="module")
def tracked(data_dir: Path):
    return support.strong(str(data_dir))


@pytest.fixture(scope="module")
def client():
    from metaauto.tracking import get_client

    return get_client(support.store_uri())


def test_default_store_is_sqlite_under_the_project_home(_project_home: Path) -> None:
    uri = support.store_uri()
    assert uri == f"sqlite:///{_project_home.resolve() / 'mlflow' / 'mlflow.db'}"


def test_run_holds_parameters_tags_and_dataset(tracked, client, data_dir: Path) -> None:
    run = client.get_run(tracked.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "protonet-omniglot-5w1s-seed0"
    params = run.data.params
    collection = support.omniglot(str(data_dir))
    expected = {
        "algorithm": "protonet", "algorithm.distance": "euclidean", "backbone": "conv4", "backbone.width": "64",
        "ways": "5", "shots": "1", "queries": "5", "seed": "0", "device": "cpu", "meta_steps": "60",
        "collection": "omniglot", "collection.fingerprint": collection.fingerprint,
    }
    assert {k: params.get(k) for k in expected} == expected
    assert params["version.torch"] and params["version.mlflow"] == mlflow.__version__
    tags = run.data.tags
    assert (tags["algorithm"], tags["collection"], tags["task_shape"]) == ("protonet", "omniglot", "5-way 1-shot")
    assert "protonet meta-trained on omniglot" in tags["mlflow.note.content"]
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "omniglot"
    assert dataset_input.dataset.digest == collection.fingerprint
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "meta-train"
    # the dataset makes runs filterable by data, as in the UI's search box
    found = client.search_runs([run.info.experiment_id], f"dataset.digest = '{collection.fingerprint}'")
    assert tracked.run_id in {r.info.run_id for r in found}


def test_run_holds_stepped_and_final_metrics(tracked, client) -> None:
    loss = client.get_metric_history(tracked.run_id, "meta_train/loss")
    assert [m.step for m in loss] == list(range(1, 61))
    assert [m.value for m in loss] == pytest.approx([r.loss for r in tracked.result.history.train])
    assert len(client.get_metric_history(tracked.run_id, "meta_train/tasks_per_s")) == 60
    val = client.get_metric_history(tracked.run_id, "meta_val/accuracy")
    assert [m.step for m in val] == [30, 60]
    metrics = client.get_run(tracked.run_id).data.metrics
    report = tracked.report
    assert metrics["meta_test/accuracy"] == pytest.approx(report.learner.mean)
    assert metrics["meta_test/ci95"] == pytest.approx(report.learner.ci95)
    for baseline in ("scratch", "pretrain"):
        assert metrics[f"baseline/{baseline}/accuracy"] == pytest.approx(report.baselines[baseline].mean)
        assert f"baseline/{baseline}/ci95" in metrics
    assert [m.step for m in client.get_metric_history(tracked.run_id, "adaptation/accuracy")] == [1, 2]


def test_run_holds_artifacts_and_a_pickle_free_model(tracked, client, tmp_path: Path) -> None:
    local = Path(client.download_artifacts(tracked.run_id, "", str(tmp_path)))
    files = {str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()}
    assert {"learner/model.safetensors", "learner/learner.json", "figures/learning_curve.png",
            "figures/adaptation_curve.png", "evaluation/report.json"} <= files
    assert (local / "figures/learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((local / "evaluation/report.json").read_text())
    assert len(report["learner"]["per_task"]) == 40 and report["episodes"]["tasks"] == 40
    learner_json = json.loads((local / "learner/learner.json").read_text())
    assert learner_json["learner"] == "protonet" and learner_json["extra"]["io"]["input_shape"] == [1, 28, 28]

    run = client.get_run(tracked.run_id)
    (output,) = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert logged.name == "model" and logged.status.to_int() == 1 or str(logged.status) == "READY"
    model_dir = Path(mlflow.artifacts.download_artifacts(logged.artifact_location, dst_path=str(tmp_path / "m")))
    model_files = {str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file()}
    assert "artifacts/learner/model.safetensors" in model_files and "model_code.py" in model_files
    assert not [f for f in model_files if f.endswith((".pkl", ".pickle", ".pt", ".pth"))]
    mlmodel = mlflow.models.Model.load(str(model_dir))
    assert mlmodel.signature.inputs.input_names()[:2] == ["task", "label"]
    assert mlmodel.saved_input_example_info is not None


def test_failed_training_marks_the_run_failed(client, data_dir: Path) -> None:
    from metaauto.engine.callbacks import Callback
    from metaauto.tracking import train_tracked

    class Explode(Callback):
        def on_step(self, run, record):
            if record.step == 2:
                raise RuntimeError("disk on fire")

    collection = support.omniglot(str(data_dir))
    with pytest.raises(RuntimeError, match="disk on fire"):
        train_tracked(support.new_protonet(collection), collection, support.config(5, meta_batch_size=2),
                      evaluation=support.small_eval(), callbacks=[Explode()], client=client, name="doomed")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("metaauto").experiment_id], "attributes.run_name = 'doomed'"
    )
    assert run.info.status == "FAILED"
    assert run.data.tags["metaauto.error"] == "RuntimeError: disk on fire"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "meta_train/loss")] == [1, 2]


def test_runs_are_logged_by_id_from_parallel_threads(client) -> None:
    from metaauto.tracking import TrackedRun

    runs = [TrackedRun.start(run_name=f"thread-{i}", client=client) for i in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(run: TrackedRun, offset: float) -> None:
        try:
            barrier.wait()
            with run:
                for step in range(20):
                    run.log_metrics({"value": offset + step}, step=step)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(run, 100.0 * i)) for i, run in enumerate(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert mlflow.active_run() is None
    for i, run in enumerate(runs):
        assert client.get_run(run.run_id).info.status == "FINISHED"
        values = [m.value for m in sorted(client.get_metric_history(run.run_id, "value"), key=lambda m: m.step)]
        assert values == [100.0 * i + s for s in range(20)]


def test_nothing_is_written_to_the_working_directory(tracked) -> None:
    # MLflow's own defaults would create ./mlflow.db and ./mlruns wherever the process started
    assert not Path("mlflow.db").exists() and not Path("mlruns").exists()


def test_the_metric_streamer_sends_in_the_background_in_order_and_close_waits(client) -> None:
    """Batches leave on a sender thread (a trial does not wait on the tracking server), arrive in the
    order they were flushed, and close() returns only once the store has all of them."""
    from metaauto.tracking import MlflowCallback, TrackedRun

    run = TrackedRun.start(run_name="streamer", client=client)
    streamer = MlflowCallback(run)
    sent_from: set[str] = set()
    original = run.log_metric_records

    def recording(records):
        sent_from.add(threading.current_thread().name)
        original(records)

    run.log_metric_records = recording
    for batch in range(5):
        streamer._pending.extend(support_metric("loss", float(batch * 10 + i), batch * 10 + i) for i in range(10))
        streamer.flush()
    streamer.send(run.log_params, {"after": "metrics"})
    streamer.close()
    assert sent_from and all(name.startswith("mlflow-metrics") for name in sent_from)
    history = sorted(client.get_metric_history(run.run_id, "loss"), key=lambda m: m.step)
    assert [m.value for m in history] == [float(s) for s in range(50)]
    assert client.get_run(run.run_id).data.params == {"after": "metrics"}
    run.end()


def test_a_store_error_in_the_background_is_raised_by_close(client) -> None:
    from metaauto.tracking import MlflowCallback, TrackedRun

    run = TrackedRun.start(run_name="streamer-error", client=client)
    streamer = MlflowCallback(run)

    def refuse(records):
        raise RuntimeError("tracking server said no")

    run.log_metric_records = refuse
    streamer._pending.append(support_metric("loss", 1.0, 0))
    streamer.flush()
    with pytest.raises(RuntimeError, match="tracking server said no"):
        streamer.close()
    run.end()


def support_metric(key: str, value: float, step: int):
    from mlflow.entities import Metric

    return Metric(key, value, 0, step)
