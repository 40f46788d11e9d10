"""The platform's process supervision and state records, on real processes (no servers needed)."""

from __future__ import annotations

import json
import sys
import time

import pytest

from metaauto.platform import process
from metaauto.platform.stack import StackState
from metaauto.urls import redact

# a parent that starts a child in a session of its own (as a Prefect process worker starts a flow run)
# and a grandchild, then sleeps
TREE = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"], start_new_session=True)
time.sleep(600)
"""


def test_stop_trees_ends_descendants_in_other_sessions(tmp_path):
    root = process.spawn([sys.executable, "-c", TREE], {}, tmp_path / "tree.log", cwd=tmp_path)
    process.wait_until(lambda: len(process.descendants(root)) == 2, 60, "the tree", [root], tmp_path / "tree.log")
    members = [root, *process.descendants(root)]
    assert process.tree_alive(root) and all(process.alive(p) for p in members)
    process.stop_trees([root], timeout=10)
    assert not process.tree_alive(root) and not any(process.alive(p) for p in members)


def test_wait_until_names_the_process_that_exited(tmp_path):
    pid = process.spawn([sys.executable, "-c", "print('cannot start: no such port'); raise SystemExit(3)"], {},
                        tmp_path / "bad.log", cwd=tmp_path)
    with pytest.raises(process.ProcessError, match=f"(?s)process {pid} exited.*cannot start: no such port"):
        process.wait_until(lambda: False, 60, "a server answering", [pid], tmp_path / "bad.log")
    with pytest.raises(process.ProcessError, match="not within 0s"):
        process.wait_until(lambda: False, 0.2, "never", [], tmp_path / "bad.log")


def test_records_are_private_and_round_trip(tmp_path):
    state = {
        "host": "127.0.0.1", "pool": "p", "deployment": "search-worker/scaleout", "started_at": time.time(),
        "prefect": {"name": "prefect", "pid": 1, "host": "127.0.0.1", "port": 4200, "url": "http://127.0.0.1:4200",
                    "health_url": "http://127.0.0.1:4200/api/health", "log": "p.log", "started_at": 0.0},
        "mlflow": {"name": "mlflow", "pid": 2, "host": "127.0.0.1", "port": 5000, "url": "http://127.0.0.1:5000",
                   "health_url": "http://127.0.0.1:5000/health", "log": "m.log", "started_at": 0.0},
        "workers": [{"name": "h-worker-0", "kind": "tasks", "pid": 3, "log": "w.log"}, {"name": "h-pool-worker-0", "pid": 4, "log": "x"}],
        "settings": {"postgres": "postgresql://u:secret@db/postgres", "mlflow_db": "postgresql://u:secret@db/m",
                     "prefect_db": "postgresql://u:secret@db/p", "optuna_db": "postgresql://u:secret@db/o",
                     "create": ["m", "p", "o"], "slots": 2, "gpus": 1, "gpu_limit": "gpu"},
    }
    old = StackState.from_dict(state)  # a state file of the first format (nested dicts)
    assert (old.slots, old.gpus, old.workers[1].kind, old.prefect.api_url) == (2, 1, "pool", "http://127.0.0.1:4200/api")
    path = tmp_path / "stack.json"
    process.save_record(path, old)
    assert path.stat().st_mode & 0o777 == 0o600
    again = StackState.from_dict(process.load_record(path))
    assert again == old and json.loads(path.read_text())["format"] == 2
    assert "secret" not in json.dumps(again.settings.redacted())


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:secret@db:5432/optuna", "postgresql://u:***@db:5432/optuna"),
    ("postgresql://u@db/optuna", "postgresql://u@db/optuna"),
    ("sqlite:////home/u/.metaauto/search/optuna.db", "sqlite:////home/u/.metaauto/search/optuna.db"),
    ("journal:/tmp/j.log", "journal:/tmp/j.log"),
])
def test_redact_masks_the_password_only(url, shown):
    assert redact(url) == shown
