"""Against a real ``mlflow server``: track and register a model, load it, serve it with
``mlflow models serve --env-manager local`` and query ``/invocations`` over HTTP."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

import _mlflow_support as support
import metaauto
from metaauto.downstream.pyfunc import episode_frame

NAME = "served-omniglot"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = support.free_port()
    process = subprocess.Popen(
        support.mlflow_cli("server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                           "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
                           "--artifacts-destination", (root / "artifacts").as_uri()),
        cwd=root, env=support.subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        support.wait_http(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        support.stop(process)


@pytest.fixture(scope="module")
def registered(server: str, data_dir: Path):
    from metaauto.tracking import get_client, train_tracked

    collection = support.omniglot(str(data_dir))
    evaluation = support.small_eval()
    evaluation.baselines, evaluation.tasks = False, 10
    tracked = train_tracked(support.new_protonet(collection), collection, support.config(3), evaluation=evaluation,
                            register_as=NAME, client=get_client(server))
    assert tracked.decision.promoted
    return tracked


@pytest.fixture(scope="module")
def scoring(server: str, registered, tmp_path_factory: pytest.TempPathFactory):
    port = support.free_port()
    process = subprocess.Popen(
        support.mlflow_cli("models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager", "local",
                           "-h", "127.0.0.1", "-p", str(port)),
        cwd=tmp_path_factory.mktemp("serve"), env=support.subprocess_env(MLFLOW_TRACKING_URI=server),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        support.wait_http(f"http://127.0.0.1:{port}/ping", process, timeout=120)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        support.stop(process)


@pytest.fixture(scope="module")
def request_frame(server: str, registered, data_dir: Path) -> pd.DataFrame:
    model = metaauto.load(f"models:/{NAME}@champion", tracking_uri=server)
    batch = support.omniglot(str(data_dir)).sample("test", 5, 1, 3, tasks=2, seed=7)
    return episode_frame(model, batch, tasks=2)


def _post(url: str, frame: pd.DataFrame) -> requests.Response:
    body = '{"dataframe_split": ' + frame.to_json(orient="split", index=False) + "}"
    return requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)


def test_server_run_holds_the_model_and_metrics(server: str, registered) -> None:
    from metaauto.tracking import get_client

    client = get_client(server)
    run = client.get_run(registered.run_id)
    assert run.info.status == "FINISHED" and run.data.params["algorithm"] == "protonet"
    assert len(client.get_metric_history(registered.run_id, "meta_train/loss")) == 3
    version = client.get_model_version_by_alias(NAME, "champion")
    assert version.run_id == registered.run_id


def test_loaded_from_the_server_matches_local_prediction(server: str, request_frame: pd.DataFrame) -> None:
    from metaauto.downstream.pyfunc import predict_frame

    model = metaauto.load(f"models:/{NAME}/1", tracking_uri=server)
    out = predict_frame(model, request_frame)
    assert len(out) == 2 * 15 and set(out["task"]) == {"task-0", "task-1"}
    assert out["prediction"].isin([f"class_{k}" for k in range(5)]).all()


def test_served_model_answers_invocations(scoring: str, request_frame: pd.DataFrame) -> None:
    response = _post(scoring, request_frame)
    assert response.status_code == 200, response.text
    predictions = pd.DataFrame(response.json()["predictions"])
    queries = request_frame[request_frame["label"].isna()]
    assert list(predictions["row"]) == list(queries.index)
    assert list(predictions["task"]) == list(queries["task"])
    assert predictions["prediction"].isin([f"class_{k}" for k in range(5)]).all()
    for row in predictions.itertuples():
        assert set(row.probabilities) == {f"class_{k}" for k in range(5)}
        assert sum(row.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert row.probability == pytest.approx(max(row.probabilities.values()))


def test_served_model_accepts_numeric_labels(scoring: str, request_frame: pd.DataFrame) -> None:
    frame = request_frame.copy()
    frame["label"] = [None if v is None or v != v else int(str(v).split("_")[1]) for v in frame["label"]]
    response = _post(scoring, frame)
    assert response.status_code == 200, response.text
    assert set(pd.DataFrame(response.json()["predictions"])["prediction"]) <= set(range(5))


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda f: f.assign(label=[None if t == "task-1" else v for t, v in zip(f["task"], f["label"])]),
         "task 'task-1' has no support rows"),
        (lambda f: f.assign(px_17=[np.nan] + list(f["px_17"].iloc[1:])), "feature 'px_17'"),
        (lambda f: f.drop(columns=["px_783"]), "px_783"),
        (lambda f: f.assign(label=[v if v is None or v != v else ["list"] for v in f["label"]]), "neither a string nor a number"),
        (lambda f: f.assign(label=[v if v is None or v != v else "same" for v in f["label"]]), "at least 2 classes"),
    ],
    ids=["no-support-rows", "nan-feature", "missing-feature", "unknown-label", "single-class"],
)
def test_malformed_requests_get_a_4xx_that_says_why(scoring: str, request_frame: pd.DataFrame, break_it, message: str) -> None:
    response = _post(scoring, break_it(request_frame.copy()))
    assert 400 <= response.status_code < 500, response.text
    assert message in json.loads(response.text)["message"]
