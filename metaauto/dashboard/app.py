"""The Streamlit app behind ``metaauto dashboard`` (``streamlit run`` this file).

It ships inside the package so an installed ``metaauto`` finds it without the source checkout;
``dashboards/app.py`` is a thin entry for people who start Streamlit by hand. Every number comes from
:mod:`metaauto.dashboard`; this file is only layout. The page is picked in the sidebar or with
``?page=leaderboard|studies|try``.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from metaauto.dashboard import data
from metaauto.errors import MetaautoError
from metaauto.tracking.store import get_client, tracking_uri
from metaauto.urls import redact

PAGES = {"leaderboard": "Leaderboard", "studies": "Study explorer", "try": "Try it"}


def leaderboard_page() -> None:
    st.header("Leaderboard")
    client = get_client()
    board = data.leaderboard(client)
    if board.empty:
        st.info(f"No registered meta-models in {tracking_uri()} yet. Train with `metaauto train --register NAME`.")
        return
    st.dataframe(board, hide_index=True, width="stretch")
    name = st.selectbox("Model", list(board["model"]), key="lb_model")
    versions = data.model_versions(client, name)
    champion = next((v for v in versions if v.is_champion), None)
    shown = champion or versions[0]
    st.subheader(f"{name}: champion v{champion.version}" if champion else f"{name}: no champion yet")
    st.markdown(f"meta-test {shown.metric or 'metric'}: **{data.fmt_ci(shown.mean, shown.ci95)}** (95% CI)")
    comparison = data.comparison_frame(shown)
    if not comparison.empty:
        fig = px.bar(comparison, x="name", y="mean", color="kind", error_y="ci95",
                     title=f"{shown.algorithm} vs baselines and published results")
        st.plotly_chart(fig, key="lb_chart")
    st.markdown("**Versions**")
    st.dataframe(data.versions_frame(versions), hide_index=True, width="stretch")


def studies_page() -> None:
    st.header("Study explorer")
    url = data.storage_url()
    names = data.study_names(url)
    if not names:
        st.info("No Optuna studies yet. Run `metaauto search`.")
        return
    name = st.selectbox("Study", names, key="study_name")
    study = data.load_study(name, url)
    frame = data.trials_frame(study)
    states = frame["state"].value_counts().to_dict()
    st.markdown(f"{len(frame)} trials: " + ", ".join(f"{n} {s.lower()}" for s, n in states.items()))
    st.subheader("Trials by algorithm")
    st.dataframe(data.by_algorithm(frame), hide_index=True, width="stretch")
    fig = px.strip(frame, x="algorithm", y="value", color="state", hover_data=["trial", "reason"])
    st.plotly_chart(fig, key="by_algorithm")
    direction = study.direction.name
    best = data.best_so_far(frame, direction)
    if not best.empty:
        st.subheader("Best so far")
        fig = go.Figure([
            go.Scatter(x=best["complete"], y=best["value"], mode="markers", name="trial", text=best["algorithm"]),
            go.Scatter(x=best["complete"], y=best["best"], mode="lines", line_shape="hv", name="best so far"),
        ])
        fig.update_layout(xaxis_title="completed at", yaxis_title=f"objective ({direction.lower()})")
        st.plotly_chart(fig, key="best_so_far")
    st.subheader("Parameter importances")
    importance = data.importances(study)
    if importance:
        frame_imp = pd.DataFrame({"parameter": list(importance), "importance": list(importance.values())})
        st.plotly_chart(px.bar(frame_imp, x="importance", y="parameter", orientation="h"), key="importances")
    else:
        st.caption("Not enough completed trials to estimate importances.")
    pruned = frame[frame["state"] == "PRUNED"]
    st.subheader(f"Pruned trials ({len(pruned)})")
    st.dataframe(pruned[["trial", "algorithm", "last_step", "reason"]], hide_index=True, width="stretch")


@st.cache_resource(show_spinner=False)
def _load(uri: str):  # noqa: ANN202 - a MetaModel, cached across reruns
    from metaauto.downstream.loading import load

    return load(uri, tracking_uri=tracking_uri())


def try_page() -> None:
    st.header("Try it")
    client = get_client()
    board = data.leaderboard(client)
    champions = [m for m, c in zip(board.get("model", []), board.get("champion", [])) if c is not None]
    if not champions:
        st.info("No champion to try: promote a model first.")
        return
    name = st.selectbox("Champion", champions, key="try_model")
    model = _load(data.champion_uri(name))
    spec = model.spec
    st.caption(f"{data.champion_uri(name)}: {spec.task_type} on {spec.collection.get('name')}, "
               f"{spec.episode.get('ways') or ''} ways {spec.episode.get('shots')} shots")
    if spec.encoding == "pixels" and spec.task_type == "classification":
        seed = int(st.number_input("Episode seed", min_value=0, value=0, step=1, key="try_seed"))
        episode = data.draw_episode(model, seed=seed)
        st.subheader("Support set")
        st.image([img for img in episode.support_images], caption=[f"class {c}" for c in episode.support_labels], width=72)
        st.subheader(f"Query predictions: {episode.accuracy:.0%} correct")
        st.image([img for img in episode.query_images],
                 caption=[f"pred {p} / true {t}" + (" ✓" if p == t else " ✗")
                          for p, t in zip(episode.predictions, episode.query_labels)], width=72)
    st.subheader("Your own task (CSV)")
    st.caption("One row per example: a task id, the label for support rows (empty for query rows), the features.")
    try:
        template = data.example_frame(model)
        st.download_button("Example CSV", template.to_csv(index=False), file_name=f"{name}-example.csv", key="try_template")
    except MetaautoError as exc:
        st.caption(f"(no example: {exc})")
    upload = st.file_uploader("Support and query rows", type="csv", key="try_csv")
    if upload is not None:
        try:
            st.dataframe(data.predict_csv(model, pd.read_csv(upload)), hide_index=True, width="stretch")
        except MetaautoError as exc:
            st.error(str(exc))


def main() -> None:
    st.set_page_config(page_title="metaauto", layout="wide")
    default = st.query_params.get("page", "leaderboard")
    keys = list(PAGES)
    page = st.sidebar.radio("Page", keys, index=keys.index(default) if default in keys else 0,
                            format_func=PAGES.get, key="page")
    st.sidebar.caption(f"MLflow: {redact(tracking_uri())}")
    st.sidebar.caption(f"Studies: {redact(data.storage_url())}")
    try:
        {"leaderboard": leaderboard_page, "studies": studies_page, "try": try_page}[page]()
    except MetaautoError as exc:
        st.error(str(exc))


main()
