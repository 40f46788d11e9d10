"""``evaluate-and-promote``: meta-test the study's best configuration against the baselines, register it,
and let the registry decide whether it becomes ``@champion``.

The work is the library's: the final training is the same step ``run_search`` ends with (the best
trial's configuration, meta-trained again and tracked by :func:`metaauto.tracking.train_tracked`, which
evaluates on the meta-test split with both baselines on the same episodes and registers and promotes by
the registry's paired test). The flow adds the artifact that explains the outcome.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from flows.common import artifact_key, mlflow_ui_command, run_link
from flows.params import CollectionParams, EvalParams, SearchParams
from flows.search import setup, storage_url


@task(name="train-best", cache_policy=NONE)
def train_best_task(parts: dict[str, Any], best: Any, parent: Any, settings: Any, evaluation: EvalParams,
                    experiment: str) -> Any:
    """What ``run_search`` ends with (see ``metaauto.search.study._train_best``), plus the promotion test's settings."""
    from metaauto.engine import TimeBudget
    from metaauto.search.objective import build, train_config
    from metaauto.search.tracking import PARENT_TAG
    from metaauto.tracking import train_tracked

    budget = parts["budget"]
    if evaluation.final_steps is not None:
        # a long final training validates about 20 times, not every trial-sized interval
        budget = dataclasses.replace(budget, max_steps=evaluation.final_steps,
                                     val_every=max(budget.val_every, evaluation.final_steps // 20))
    if evaluation.final_seconds is not None:
        budget = dataclasses.replace(budget, seconds=evaluation.final_seconds)
    candidate = parts["space"].candidate(best.params)
    learner = build(candidate, parts["collection"], parts["episodes"])
    config = train_config(candidate, parts["collection"], parts["episodes"], budget)
    # the final training's wall-clock cap (EvalParams.final_seconds, else the trial budget's seconds)
    limits = [TimeBudget(budget.seconds)] if budget.seconds is not None else []
    name = parts["study_name"]
    return train_tracked(
        learner, parts["collection"], config, evaluation=settings, register_as=evaluation.register_as or None,
        margin=evaluation.margin, alpha=evaluation.alpha, test=evaluation.test, experiment=experiment, client=parent.client,
        name=f"{name}-best-trial{best.number}-{candidate.algorithm}",
        tags={PARENT_TAG: parent.run_id, "optuna.study": name, "optuna.trial": best.number, "optuna.best": "true"},
        callbacks=limits,
    )


def outcome_markdown(tracked: Any, client: Any, evaluation: EvalParams, study_name: str) -> str:
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
                      "", f"Test: one-sided paired {evaluation.test} at alpha {evaluation.alpha}, margin {evaluation.margin}, "
                          "on the per-task scores of the same meta-test episodes."]
    lines += ["", f"Browse: `{mlflow_ui_command(client)}`; model `{tracked.model_uri}`."]
    return "\n".join(lines)


@flow(name="evaluate-and-promote", log_prints=True)
def evaluate_and_promote(data: CollectionParams = CollectionParams(), search: SearchParams = SearchParams(),
                         evaluation: EvalParams = EvalParams(), experiment: str = "metaauto") -> dict[str, Any]:
    """Meta-test the study's best trial with the baselines, register it, and promote it if it wins."""
    from metaauto.search import open_storage
    from metaauto.search.space import SearchError
    from metaauto.search.tracking import PARENT_ATTR
    from metaauto.tracking import EvalSettings
    from metaauto.tracking.cli import tracking_summary
    from metaauto.tracking.run import TrackedRun
    from metaauto.tracking.store import get_client

    logger = get_run_logger()
    parts = setup(data, search)
    name = parts["study_name"]
    url = storage_url(search, name)
    storage = open_storage(url)
    if name not in optuna.get_all_study_names(storage):
        raise SearchError(f"study {name!r} does not exist in {url}; run search-learners first")
    study = optuna.load_study(study_name=name, storage=storage)
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raise SearchError(f"study {name!r} has no complete trial to evaluate")
    best = study.best_trial
    client = get_client()
    parent_id = study.user_attrs.get(PARENT_ATTR)
    if parent_id is None:
        raise SearchError(f"study {name!r} has no MLflow parent run; run search-learners with tracking first")
    parent = TrackedRun(client, parent_id)
    settings = EvalSettings(tasks=evaluation.tasks, seed=search.seed, baselines=evaluation.baselines,
                            pretrain_steps=evaluation.pretrain_steps, scratch_steps=evaluation.scratch_steps)
    logger.info("meta-testing trial %d (%s, value %.4g) on %d tasks", best.number, best.params["algorithm"], best.value,
                evaluation.tasks)
    tracked = train_best_task(parts, best, parent, settings, evaluation, experiment)
    parent.set_tags({"best_run_id": tracked.run_id})
    create_markdown_artifact(markdown=outcome_markdown(tracked, client, evaluation, name),
                             key=artifact_key("evaluation", name), description=f"Meta-test and promotion of {name}")
    summary = tracking_summary(tracked)
    logger.info("meta-test: %s", summary["meta_test"])
    if tracked.decision is not None:
        logger.info(tracked.decision.describe())
    return {"study": name, "best_trial": best.number, "best_params": dict(best.params), **summary}
