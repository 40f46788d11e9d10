"""``metaauto search`` from the command line: overrides, JSON output, worker and resume errors."""

from __future__ import annotations

import json
import uuid

from typer.testing import CliRunner

from metaauto.cli import app

runner = CliRunner()
TINY = ["--collection", "sinusoid", "--shots", "5", "--queries", "5", "--max-steps", "4", "--val-every", "2",
        "--val-tasks", "5", "--pruner", "none", "--no-track"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_search_json_with_set_and_config_file(tmp_path, single_thread):
    config = tmp_path / "space.yaml"
    config.write_text("reptile:\n  inner_steps: 2\nmeta_lr: 0.002\n")
    study = f"cli-{uuid.uuid4().hex[:8]}"
    result = invoke("search", *TINY, "--trials", 3, "--algorithms", "reptile,fomaml", "--study", study, "--config", config,
                    "--set", "fomaml.inner_lr=0.05", "--set", "meta_lr=0.001", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["study"] == study and sum(report["states"].values()) == 3
    rows = {row["trial"]: row for row in report["leaderboard"]}
    assert rows[0]["algorithm"] == "reptile" and rows[1]["algorithm"] == "fomaml"  # the published defaults first
    assert all(row["meta_lr"] == 0.001 for row in rows.values())  # --set wins over the config file
    assert all(row["reptile.inner_steps"] == 2 for row in rows.values() if row["algorithm"] == "reptile")
    assert all(row["fomaml.inner_lr"] == 0.05 for row in rows.values() if row["algorithm"] == "fomaml")
    assert "[trial 0/3] reptile COMPLETE" in result.stderr

    again = invoke("search", *TINY, "--trials", 3, "--algorithms", "reptile,fomaml", "--study", study)
    assert again.exit_code == 2 and "--resume" in again.stderr
    resumed = invoke("search", *TINY, "--trials", 4, "--algorithms", "reptile,fomaml", "--study", study, "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert sum(json.loads(resumed.stdout)["states"].values()) == 4


def test_search_bad_input_exits_2():
    result = invoke("search", *TINY, "--trials", 1, "--set", "maml.inner_rate=0.1")
    assert result.exit_code == 2 and "no searched parameter named maml.inner_rate" in result.stderr
    result = invoke("search", *TINY, "--trials", 1, "--study", f"missing-{uuid.uuid4().hex[:8]}", "--worker")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = invoke("search", *TINY, "--trials", 1, "--algorithms", "protonet")
    assert result.exit_code == 2 and "cannot solve regression" in result.stderr
    result = invoke("search", *TINY, "--trials", 1, "--trial-seconds", 0)
    assert result.exit_code == 2 and "time budget must be positive" in result.stderr


def test_warm_start_flag(single_thread):
    import optuna

    from metaauto.search import default_storage_url
    from metaauto.search.knowledge import KnowledgeBase, meta_features
    from metaauto.tasks import load_collection

    past = f"cli-past-{uuid.uuid4().hex[:8]}"
    best = {"algorithm": "fomaml", "fomaml.inner_lr": 0.02, "fomaml.inner_steps": 2, "meta_lr": 0.002,
            "meta_batch_size": 4, "backbone.width": 40}
    KnowledgeBase().record(past, meta_features(load_collection("sinusoid"), None, 5), best, 0.0)  # MSE 0: ranks first among equally near studies
    for flag, expected in (("--warm-start", [best]), ("--no-warm-start", [])):
        study = f"cli-warm-{uuid.uuid4().hex[:8]}"
        result = invoke("search", *TINY, "--trials", 1, "--algorithms", "fomaml", "--study", study, flag)
        assert result.exit_code == 0, result.output
        trials = optuna.load_study(study_name=study, storage=default_storage_url()).get_trials(deepcopy=False)
        warm = [t.system_attrs["fixed_params"] for t in trials if str(t.user_attrs.get("enqueued", "")).startswith("warm start")]
        assert warm[:1] == expected
