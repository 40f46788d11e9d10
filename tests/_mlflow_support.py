"""Shared, process-cached fixtures for the MLflow tests (tracking, registry, sklearn, serving).

Training and evaluating even a small meta-model takes seconds, so the two models these tests need
(``strong``: protonet meta-trained on Omniglot; ``weak``: one meta-update) are tracked once per test
process into the session's embedded store and reused by every module that asks.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
WAYS, SHOTS, QUERIES = 5, 1, 5


@functools.cache
def omniglot(data_dir: str):
    from metaauto.tasks import load_collection

    return load_collection("omniglot", data_dir=data_dir)


def new_protonet(collection):
    from metaauto.backbones import make_backbone
    from metaauto.learners import make_learner

    return make_learner("protonet", make_backbone("conv4", collection.input_shape))


def small_eval():
    from metaauto.tracking import EvalSettings

    return EvalSettings(tasks=40, scratch_steps=5, pretrain_steps=5, curve_tasks=10, curve_shots=(1, 2))


def config(steps: int, **overrides):
    from metaauto.engine.config import TrainConfig

    values = dict(ways=WAYS, shots=SHOTS, queries=QUERIES, meta_batch_size=4, meta_steps=steps, meta_lr=2e-3,
                  val_every=max(1, steps // 2), val_tasks=10, progress=False, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


@functools.cache
def store_uri() -> str:
    """The embedded default store of this test session (under the throw-away METAAUTO_HOME)."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    from metaauto.tracking.store import tracking_uri

    return tracking_uri()


@functools.cache
def strong(data_dir: str):
    """Protonet meta-trained for 60 updates of 4 tasks on Omniglot 5-way 1-shot, tracked with baselines."""
    from metaauto.tracking import get_client, train_tracked

    collection = omniglot(data_dir)
    return train_tracked(new_protonet(collection), collection, config(60), evaluation=small_eval(),
                         client=get_client(store_uri()))


@functools.cache
def weak(data_dir: str):
    """The same architecture after a single meta-update (no baselines)."""
    from metaauto.tracking import get_client, train_tracked

    collection = omniglot(data_dir)
    evaluation = small_eval()
    evaluation.baselines = False
    return train_tracked(new_protonet(collection), collection, config(1, meta_lr=1e-5), evaluation=evaluation,
                         client=get_client(store_uri()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # `mlflow models serve` execs `uvicorn` by name: the interpreter's own bin directory must be on PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def mlflow_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlflow", *args]
