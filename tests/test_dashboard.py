"""The dashboard against a store filled by real runs: a tiny Omniglot protonet champion and a tiny sinusoid
search. Pages are driven by Streamlit's own test client, then served by ``metaauto dashboard`` and
screenshotted in headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "metaauto" / "dashboard" / "app.py"
MODEL = f"omniglot-dash-{uuid.uuid4().hex[:6]}"
CHROMIUM = "/usr/bin/chromium"
RENDERED = {
    "leaderboard": ['[data-testid="stPlotlyChart"] .js-plotly-plot', '[data-testid="stDataFrame"] canvas'],
    "studies": ['[data-testid="stPlotlyChart"] .js-plotly-plot', '[data-testid="stDataFrame"] canvas'],
    "try": ['[data-testid="stImage"] img'],
}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A store of this module's own: the pages show exactly what ``filled`` put there, not other tests' models."""
    store = tmp_path_factory.mktemp("dashboard-store")
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    os.environ["METAAUTO_SEARCH_STORAGE"] = f"sqlite:///{store / 'optuna.db'}"
    from metaauto.tracking import get_client

    yield get_client()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("METAAUTO_SEARCH_STORAGE", None)


@pytest.fixture(scope="module")
def filled(client, data_dir, single_thread):
    """Two protonet versions on Omniglot 5w1s (the first becomes champion) and a 3-trial sinusoid study."""
    import optuna

    from metaauto.backbones import make_backbone
    from metaauto.engine.config import TrainConfig
    from metaauto.learners import make_learner
    from metaauto.search import Budget, run_search
    from metaauto.tasks import load_collection
    from metaauto.tracking import EvalSettings, train_tracked

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    omniglot = load_collection("omniglot", data_dir=data_dir)
    evaluation = EvalSettings(tasks=20, scratch_steps=2, pretrain_steps=2, curve_tasks=3, curve_shots=(1,))
    for steps in (15, 1):  # the second version skips the baselines: it only has to exist
        config = TrainConfig(ways=5, shots=1, queries=5, meta_batch_size=4, meta_steps=steps, meta_lr=2e-3,
                             val_every=max(1, steps), val_tasks=5, progress=False, seed=0)
        learner = make_learner("protonet", make_backbone("conv4", omniglot.input_shape, width=16))
        train_tracked(learner, omniglot, config, evaluation=evaluation, register_as=MODEL, client=client)
        evaluation = EvalSettings(tasks=20, baselines=False, curve_tasks=2, curve_shots=(1,))
    study = f"sin-dash-{uuid.uuid4().hex[:6]}"
    run_search(load_collection("sinusoid"), shots=5, queries=10, trials=3, algorithms=["maml", "reptile"],
               budget=Budget(max_steps=10, val_every=5, val_tasks=5), pruner="median", study_name=study, track=False,
               storage=os.environ["METAAUTO_SEARCH_STORAGE"], warm_start=False)
    return study


def test_leaderboard_reads_champion_metrics_baselines_and_anchors(filled, client):
    from metaauto.dashboard import data

    board = data.leaderboard(client)
    row = board[board["model"] == MODEL].iloc[0]
    versions = data.model_versions(client, MODEL)
    assert [v.version for v in versions] == ["2", "1"] and row["versions"] == 2
    champion = next(v for v in versions if v.is_champion)
    run = client.get_run(champion.run_id)
    assert row["champion"] == champion.version
    assert row["meta_test"] == run.data.metrics["meta_test/accuracy"] and row["ci95"] == run.data.metrics["meta_test/ci95"]
    assert champion.baselines  # the champion was evaluated with baselines
    for name, (mean, ci) in champion.baselines.items():
        assert mean == run.data.metrics[f"baseline/{name}/accuracy"] and ci == run.data.metrics[f"baseline/{name}/ci95"]
    assert row["paper"] == pytest.approx(0.988) and row["paper_best"] == pytest.approx(0.996)
    kinds = data.comparison_frame(champion)["kind"].value_counts().to_dict()
    assert kinds["this model"] == 1 and kinds["paper"] == len(data.PAPER_ANCHORS["omniglot"][(5, 1)])


def test_study_helpers_follow_the_storage(filled):
    from metaauto.dashboard import data

    assert filled in data.study_names()
    study = data.load_study(filled)
    frame = data.trials_frame(study)
    assert len(frame) == 3 and set(frame["algorithm"]) <= {"maml", "reptile"}
    best = data.best_so_far(frame, study.direction.name)
    maximize = study.direction.name == "MAXIMIZE"
    assert best["best"].is_monotonic_increasing if maximize else best["best"].is_monotonic_decreasing
    assert best["best"].iloc[-1] == study.best_value
    assert list(best["best"]) == list(best["value"].cummax() if maximize else best["value"].cummin())
    counts = data.by_algorithm(frame)
    assert counts.drop(columns=["algorithm", "min", "max"]).to_numpy().sum() == 3
    with pytest.raises(data.DashboardError, match="cannot read studies") as caught:
        data.study_names("postgresql://nobody:secret@127.0.0.1:1/none")
    assert "secret" not in str(caught.value)


def test_draw_episode_and_csv_predictions_use_the_champion(filled, data_dir):
    from metaauto.dashboard import data
    from metaauto.downstream.loading import load

    model = load(data.champion_uri(MODEL))
    episode = data.draw_episode(model, seed=3, data_dir=data_dir)
    assert episode.support_images.shape == (5, 28, 28) or episode.support_images.shape[0] == 5
    assert 0.0 <= episode.support_images.min() and episode.support_images.max() <= 1.0
    assert episode.probabilities.shape == (10, 5) and len(episode.predictions) == 10
    frame = data.example_frame(model, data_dir=data_dir)
    out = data.predict_csv(model, frame)
    assert len(out) == int(frame["label"].isna().sum()) and set(out["prediction"]) <= set(frame["label"].dropna())


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(APP), default_timeout=60)


def test_app_pages_render_with_the_streamlit_test_client(filled, data_dir):
    at = _app().run()
    assert not at.exception, at.exception
    assert at.header[0].value == "Leaderboard"
    assert MODEL in at.dataframe[0].value["model"].tolist()
    assert any("champion v" in s.value for s in at.subheader)

    at.sidebar.radio[0].set_value("studies").run()
    assert not at.exception, at.exception
    assert at.header[0].value == "Study explorer"
    at.selectbox(key="study_name").set_value(filled).run()
    assert any(s.value == "Best so far" for s in at.subheader)
    assert any(s.value.startswith("Pruned trials") for s in at.subheader)

    at.sidebar.radio[0].set_value("try").run()
    assert not at.exception, at.exception
    at.selectbox(key="try_model").set_value(MODEL).run()
    assert not at.exception, at.exception
    assert any(s.value.startswith("Query predictions:") for s in at.subheader)


def test_app_shows_the_error_for_an_unreadable_storage(filled, monkeypatch):
    monkeypatch.setenv("METAAUTO_SEARCH_STORAGE", "postgresql://nobody:secret@127.0.0.1:1/none")
    at = _app()
    at.query_params["page"] = "studies"
    at.run()
    assert not at.exception
    assert at.error and "cannot read studies" in at.error[0].value
    assert "secret" not in at.error[0].value + " ".join(c.value for c in at.sidebar.caption)  # credentials redacted


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metaauto_dashboard_serves_every_page_to_chromium(filled, tmp_path):
    from playwright.sync_api import sync_playwright

    port = _free_port()
    log = open(tmp_path / "dashboard.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "metaauto.cli", "dashboard", "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ), cwd=tmp_path,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "dashboard.log").read_text()
                assert time.monotonic() < deadline, "dashboard did not start"
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            for key, expected in [("leaderboard", MODEL), ("studies", "Best so far"), ("try", "Query predictions")]:
                page.goto(f"http://127.0.0.1:{port}/?page={key}")
                page.get_by_text(expected).first.wait_for(timeout=90_000)
                # charts, tables and images are lazily loaded chunks: wait until each kind has drawn
                for selector in RENDERED[key]:
                    page.locator(selector).first.wait_for(timeout=90_000)
                page.wait_for_timeout(1000)
                shot = tmp_path / f"{key}.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 20_000
                kept = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser" / f"dashboard-{key}.png"
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, kept)
                assert page.locator('[data-testid="stException"]').count() == 0
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    time.sleep(1)
    with socket.socket() as probe:  # the server is gone with its process: nothing left listening
        assert probe.connect_ex(("127.0.0.1", port)) != 0
