"""The `metaauto` command line: train -> evaluate round trip with --json, and friendly errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from metaauto.cli import app

runner = CliRunner()

#: a tracked run evaluates on the meta-test split with both baselines; kept small here
TINY_TRACKING = ["--eval-tasks", "20", "--pretrain-steps", "10"]
TINY_TRAIN = ["--ways", "5", "--shots", "1", "--queries", "3", "--meta-steps", "15", "--meta-batch-size", "2",
              "--meta-lr", "3e-3", "--width", "8", "--val-every", "5", "--val-tasks", "10", "--no-progress"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_train_then_evaluate_round_trip_with_json(data_dir, tmp_path):
    out = tmp_path / "run"
    trained = invoke("train", "--collection", "omniglot", "--data-dir", data_dir, "--algorithm", "protonet",
                     *TINY_TRAIN, *TINY_TRACKING, "--register", "cli-omniglot", "--output", out, "--json")
    assert trained.exit_code == 0, trained.output
    report = json.loads(trained.stdout)  # exactly one JSON document on stdout
    mlflow = report["mlflow"]  # tracked by default, in the project home's SQLite store
    assert mlflow["tracking_uri"].startswith("sqlite:///") and mlflow["registered"]["name"] == "cli-omniglot"
    assert mlflow["promotion"]["promoted"]  # the first version of a name becomes champion
    assert report["final_step"] == 15 and report["learner"] == "protonet" and report["metric"] == "accuracy"
    assert [v["step"] for v in report["validation"]] == [5, 10, 15]
    assert (out / "model" / "learner.json").is_file() and (out / "checkpoints" / "checkpoint.pt").is_file()
    summary = json.loads((out / "run.json").read_text())
    assert len(summary["history"]["train"]) == 15

    evaluated = invoke("evaluate", "--model", out, "--tasks", "20", "--queries", "5", "--pretrain-steps", "10",
                       "--scratch-steps", "5", "--per-task", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.stdout)
    assert result["learner"] == "protonet" and result["collection"] == "omniglot"
    assert list(result["results"]) == ["protonet", "scratch", "pretrain"]
    protonet = result["results"]["protonet"]
    assert protonet["tasks"] == 20 and len(protonet["per_task"]) == 20 and protonet["ways"] == 5
    assert protonet["mean"] > 0.3  # chance is 0.2
    assert set(result["paired_difference"]) == {"scratch", "pretrain"}

    human = invoke("evaluate", "--model", out / "model", "--tasks", "10", "--no-baselines")
    assert human.exit_code == 0, human.output
    assert "protonet" in human.stdout and "+-" in human.stdout


def test_resume_needs_the_flag_and_continues_a_finished_run(tmp_path):
    args = ["train", "-c", "sinusoid", "-a", "maml", "--shots", "5", "--queries", "5", "--meta-steps", "4",
            "--meta-batch-size", "4", "--val-every", "2", "--val-tasks", "5", "--inner-lr", "0.01", "--no-progress",
            "--no-track",
            "--output", tmp_path / "sine", "--json"]
    assert invoke(*args).exit_code == 0
    again = invoke(*args)
    assert again.exit_code == 2 and "--resume" in again.stderr
    resumed = invoke(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["resumed_from"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "-c", "no-such-collection", "-a", "protonet"], "unknown collection 'no-such-collection'"),
        (["train", "-c", "omniglot", "--data-dir", "{missing}", "-a", "protonet"], "does not exist"),
        (["train", "-c", "sinusoid", "-a", "protonet"], "cannot solve regression tasks"),
        (["train", "-c", "sinusoid", "-a", "no-such-algorithm"], "unknown algorithm 'no-such-algorithm'"),
        (["train", "-c", "omniglot", "-a", "protonet", "--inner-lr", "0.1"], "has no option(s) inner_lr"),
        (["train", "-c", "sinusoid", "-a", "maml", "--meta-steps", "0"], "meta_steps must be >= 1"),
        (["evaluate", "--model", "{missing}"], "holds no saved learner"),
        (["train", "-c", "sinusoid", "-a", "maml", "--no-track", "--register", "x"], "--register needs tracking"),
        (["rollback", "never-registered"], "never-registered"),
    ],
)
def test_bad_input_exits_2_with_the_message(data_dir, tmp_path, args, message):
    # data_dir: METAAUTO_DATA_DIR is set, so only the option at fault can be wrong
    result = invoke(*[a.format(missing=tmp_path / "missing") for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
