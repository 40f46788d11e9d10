"""End to end: real `prefect server` and `mlflow server` on free loopback ports, `metaauto serve` in a
subprocess, `meta-pipeline` triggered with `run_deployment` exactly as the UI does, then the MLflow runs,
the registry's champion, the flow's artifacts, and the two UIs in headless Chromium (screenshots kept
under ``test-artifacts/browser`` at the repository root and in the project home).

One module so that the servers start once (they take most of the time on a small machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from metaauto.platform import servers
from metaauto.platform.process import tree_alive
from metaauto.config import home_dir
from _prefect_support import read_artifacts

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}:\n{log.read_text()[-4000:] if log else ''}")
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}" + (f":\n{log.read_text()[-4000:]}" if log else ""))


@pytest.fixture(scope="module")
def stack(data_dir):
    """Servers + `metaauto serve`; yields their URLs; tears everything down and checks nothing survives."""
    started = servers.start(prefect_port=servers.free_port(), mlflow_port=servers.free_port(), timeout=180)
    prefect_api, mlflow_url = started["prefect"].api_url, started["mlflow"].url
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": mlflow_url,
           "METAAUTO_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_REGISTRY_URI", None)
    log = home_dir() / "servers" / "serve.log"
    with open(log, "wb") as handle:
        serve = subprocess.Popen([sys.executable, "-m", "metaauto.cli", "serve"], cwd=REPO, env=env, stdout=handle,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    state = {"prefect_api": prefect_api, "prefect_url": started["prefect"].url, "mlflow_url": mlflow_url,
             "serve": serve, "serve_log": log}
    try:
        yield state
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGINT)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait()
        kept = REPO / "test-artifacts" / "e2e"
        kept.mkdir(parents=True, exist_ok=True)
        for path in (home_dir() / "servers").glob("*.log"):
            shutil.copy(path, kept / path.name)
        pids = [started["prefect"].pid, started["mlflow"].pid, serve.pid]
        stopped = servers.stop()
        assert stopped == {"prefect": True, "mlflow": True}
        for pid in pids:
            assert not tree_alive(pid), f"process group {pid} still running after stop"
        assert servers.port_free("127.0.0.1", started["prefect"].port)
        assert servers.port_free("127.0.0.1", started["mlflow"].port)


def _deployment(api_url: str, name: str):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


@pytest.fixture(scope="module")
def pipeline_run(stack):
    """Trigger meta-pipeline/nightly with tiny sinusoid parameters and wait for its final state."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.params import CollectionParams, EvalParams, PipelineParams, SearchParams

    _wait(lambda: _deployment(stack["prefect_api"], "meta-pipeline/nightly"), 180, "the served deployments",
          stack["serve"], stack["serve_log"])
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    params = PipelineParams(
        data=CollectionParams(collection="sinusoid", shots=5, queries=10),
        search=SearchParams(trials=1, algorithms=["fomaml"], max_steps=10, val_every=5, val_tasks=5, pruner="none",
                            study_name=name),
        evaluation=EvalParams(final_steps=5, tasks=10, baselines=False, pretrain_steps=5, scratch_steps=5, register_as=name),
        experiment=f"e2e-{name}",
    )
    with temporary_settings(updates={PREFECT_API_URL: stack["prefect_api"]}):
        flow_run = run_deployment("meta-pipeline/nightly", parameters={"params": params.model_dump(mode="json")},
                                  timeout=420, poll_interval=2)
    return {"name": name, "params": params, "flow_run": flow_run}


def test_all_flows_are_deployed_with_the_nightly_schedule(stack):
    _wait(lambda: _deployment(stack["prefect_api"], "meta-pipeline/nightly"), 180, "the served deployments",
          stack["serve"], stack["serve_log"])
    nightly = _deployment(stack["prefect_api"], "meta-pipeline/nightly")
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    assert nightly.parameter_openapi_schema["properties"]["params"]
    for flow in ("ingest-collection", "search-learners", "evaluate-and-promote", "transfer-to-domain"):
        assert _deployment(stack["prefect_api"], f"{flow}/on-demand") is not None, flow


def test_triggered_pipeline_completes_registers_a_champion_and_publishes_artifacts(stack, pipeline_run):
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    flow_run, name = pipeline_run["flow_run"], pipeline_run["name"]
    assert flow_run.state.is_completed(), f"{flow_run.state}; serve log:\n{stack['serve_log'].read_text()[-4000:]}"

    client = MlflowClient(tracking_uri=stack["mlflow_url"], registry_uri=stack["mlflow_url"])
    experiment = client.get_experiment_by_name(pipeline_run["params"].experiment)
    runs = client.search_runs([experiment.experiment_id])
    kinds = {r.data.tags.get("metaauto.kind") for r in runs}
    assert {"ingest", "search"} <= kinds, kinds
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version == "1" and champion.run_id in {r.info.run_id for r in runs}

    keys = ["ingest-sinusoid", f"search-progress-{name}", f"leaderboard-{name}", f"evaluation-{name}", "pipeline-sinusoid"]
    with temporary_settings(updates={PREFECT_API_URL: stack["prefect_api"]}), get_client(sync_client=True) as prefect:
        found = read_artifacts(keys, prefect)
        # the REST call the UI makes (the client's read_flow_runs sends nulls this server version rejects)
        runs = prefect._client.post("/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 200, "offset": 0})
        runs.raise_for_status()
        subflows = runs.json()
    assert set(found) == set(keys)
    assert f"models:/{name}@champion" in found["pipeline-sinusoid"]["data"]
    names = {run["name"] for run in subflows}
    assert flow_run.name in names and len(subflows) >= 4  # the parent and its ingest/search/evaluate subflows


def _screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    copy = home_dir() / "test-artifacts" / path.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, copy)
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (make browser)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def test_prefect_ui_shows_the_deployment_and_its_parameter_form(stack, pipeline_run, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{stack['prefect_url']}/deployments")
    page.get_by_text("nightly").first.wait_for(timeout=60_000)
    _screenshot(page, "prefect-deployments")
    for flow in ("meta-pipeline", "search-learners", "ingest-collection"):
        page.get_by_text(flow).first.wait_for(timeout=30_000)

    deployment = _deployment(stack["prefect_api"], "meta-pipeline/nightly")
    page.goto(f"{stack['prefect_url']}/deployments/deployment/{deployment.id}/run")
    # the typed form: section and field titles from the pydantic models
    page.get_by_text("Collection (Optional)", exact=True).first.wait_for(timeout=60_000)
    for title in ("Search (Optional)", "Trials (Optional)", "Meta-test tasks (Optional)", "Pruner (Optional)"):
        assert page.get_by_text(title, exact=True).count() >= 1, title
    _screenshot(page, "prefect-run-form")

    page.goto(f"{stack['prefect_url']}/runs/flow-run/{pipeline_run['flow_run'].id}")
    page.get_by_text(pipeline_run["flow_run"].name).first.wait_for(timeout=60_000)
    page.get_by_text("Completed").first.wait_for(timeout=60_000)
    _screenshot(page, "prefect-flow-run")
    page.close()


def test_mlflow_ui_shows_the_runs_of_the_pipeline(stack, pipeline_run, browser):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack["mlflow_url"])
    experiment = client.get_experiment_by_name(pipeline_run["params"].experiment)
    # top-level runs only: the UI lists nested runs collapsed under their parent
    run_names = [r.info.run_name for r in client.search_runs([experiment.experiment_id])
                 if r.info.run_name and "mlflow.parentRunId" not in r.data.tags]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    page.goto(f"{stack['mlflow_url']}/#/experiments/{experiment.experiment_id}/runs")
    page.get_by_text(pipeline_run["params"].experiment).first.wait_for(timeout=60_000)
    page.get_by_text(run_names[0]).first.wait_for(timeout=60_000)
    shown = [n for n in run_names if page.get_by_text(n).count()]
    assert shown, run_names
    _screenshot(page, "mlflow-experiment")

    page.goto(f"{stack['mlflow_url']}/#/models/{pipeline_run['name']}")
    page.get_by_text("champion").first.wait_for(timeout=60_000)
    _screenshot(page, "mlflow-registered-model")
    page.close()
