"""The command line's shape: --version, choices from the library's lists, and a --help that loads no heavy library."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from metaauto import __version__
from metaauto.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"metaauto {__version__}"


def test_top_level_help_imports_no_heavy_library():
    code = ("import sys; from typer.testing import CliRunner; from metaauto.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0 and 'pipeline' in r.stdout, r.output; "
            "print(sorted(m for m in ('torch', 'mlflow', 'prefect', 'optuna', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("args", "message"), [
    (["search", "-c", "omniglot", "--pruner", "bogus"], "unknown pruner 'bogus'; known pruners: hyperband, median"),
    (["train", "-c", "omniglot", "-a", "protonet", "--optimizer", "adagrad"], "unknown optimizer 'adagrad'; known optimizers: adam"),
    (["train", "-c", "omniglot", "-a", "protonet", "--lr-schedule=step"], "unknown lr schedule 'step'"),
    (["train", "-c", "omniglot", "-a", "protonet", "--amp", "fp8"], "unknown precision 'fp8'"),
    (["train", "-c", "omniglot", "-a", "protonet", "--backbone", "resnet"], "unknown backbone 'resnet'; known backbones: conv4, mlp"),
    (["evaluate", "-m", "anywhere", "--split", "dev"], "unknown split 'dev'"),
    (["promote", "name", "1", "--test", "ztest"], "unknown test 'ztest'; known tests: wilcoxon, ttest"),
    (["stack", "add-workers", "--kind", "gpu"], "unknown worker kind 'gpu'; known worker kinds: tasks, pool"),
])
def test_choices_are_checked_before_any_work(data_dir, args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.stderr
    assert "decode" not in result.stderr and "Traceback" not in result.output  # no collection was loaded


def test_help_lists_the_catalogue():
    from metaauto.learners import LEARNERS

    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert "|".join(LEARNERS) in result.stdout.replace(" ", "")
