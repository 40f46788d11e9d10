"""``evaluate-and-promote``: meta-test the study's best configuration against the baselines, register it,
and let the registry decide whether it becomes ``@champion``.

The work is the library's final step of a search (:meth:`metaauto.search.SearchSession.train_best`: the
best trial's configuration meta-trained again and tracked by :func:`metaauto.tracking.train_tracked`,
which evaluates on the meta-test split with both baselines on the same episodes and registers and
promotes by the registry's paired test). The flow adds the artifact that explains the outcome.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from flows.common import artifact_key, mlflow_ui_command, run_link
from flows.params import CollectionParams, EvalParams, SearchParams
from flows.trials import final_settings, join_session


@task(name="train-best", cache_policy=NONE)
def train_best_task(session: Any, final: Any) -> Any:
    """The library's final training (:meth:`metaauto.search.SearchSession.train_best`) as a task run."""
    return session.train_best(final)


def outcome_markdown(tracked: Any, client: Any, final: Any, study_name: str) -> str:
    """The meta-test table, the winner and the registry's decision, for the ``evaluation`` artifact."""
    report = tracked.report
    episodes, ours = report.episodes, report.learner
    lines = [
        f"# Meta-test of the best configuration of `{study_name}`",
        "",
        f"{episodes.tasks} {episodes.split} episodes of {episodes.collection}, the same for every method; "
        f"{report.metric}, mean +- 95% CI. MLflow run {run_link(client, tracked.run_id)}.",
        "",
        f"| method | {report.metric} | 95% CI | paired difference (ours - method) |",
        "|---|---|---|---|",
    ]
    for name, r in report.methods.items():
        diff = report.paired_difference.get(name)
        cell = f"{diff.mean:+.4f} +- {diff.ci95:.4f}" if diff else ""
        lines.append(f"| {name}{' (ours)' if name == ours.name else ''} | {r.mean:.4f} | {r.ci95:.4f} | {cell} |")
    winner = report.winner()
    lead = report.lead_over_baselines()
    lines += ["", f"**Winner: {winner}**" + ("" if winner != ours.name or lead is None else
                                              f", ahead of the best baseline by {lead:.4f}") + "."]
    if report.baselines and not report.beats_a_baseline():
        lines.append("The meta-learner did not beat every baseline on these episodes.")
    lines.append("")
    if tracked.version is None:
        lines.append("Not registered (no model name given).")
    else:
        lines.append(f"Registered as `{tracked.version.name}` version {tracked.version.version}.")
        if tracked.decision is not None:
            lines += ["", "## Promotion", "", tracked.decision.describe(),
                      "", f"Test: one-sided paired {final.test} at alpha {final.alpha}, margin {final.margin}, "
                          "on the per-task scores of the same meta-test episodes."]
    lines += ["", f"Browse: `{mlflow_ui_command(client)}`; model `{tracked.model_uri}`."]
    return "\n".join(lines)


@flow(name="evaluate-and-promote", log_prints=True)
def evaluate_and_promote(data: CollectionParams = CollectionParams(), search: SearchParams = SearchParams(),
                         evaluation: EvalParams = EvalParams(), experiment: str = "metaauto") -> Any:
    """Meta-test the study's best trial with the baselines, register it, and promote it if it wins.

    Returns the study's :class:`~metaauto.search.SearchResult` with its ``final`` training."""
    logger = get_run_logger()
    session = join_session(data, search, experiment, missing="run search-learners first")
    session.attach_parent_run()
    best = session.best_trial()
    logger.info("meta-testing trial %d (%s, value %.4g) on %d tasks", best.number, best.params["algorithm"], best.value,
                evaluation.tasks)
    final = final_settings(search, evaluation)
    result = session.result()
    result.final = train_best_task(session, final)
    name = session.problem.study_name
    create_markdown_artifact(markdown=outcome_markdown(result.final, session.client, final, name),
                             key=artifact_key("evaluation", name), description=f"Meta-test and promotion of {name}")
    summary = result.final.summary()
    logger.info("meta-test: %s", summary.meta_test.to_dict())
    if summary.promotion is not None:
        logger.info(summary.promotion.describe())
    return result
