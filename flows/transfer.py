"""``transfer-to-domain``: pull a registered meta-model, adapt it to a new collection's few labelled
support examples, and score it against the baselines on the same episodes.

Adaptation and scoring are the library's evaluation protocol (:func:`metaauto.evaluation.compare`): each
episode's support set is all the model sees of its task. The target collection must share the model's
input shape (another Omniglot split or alphabet set, a table with the same features).

The two transfer domains are scored the way their fields score them: when the target is MovieLens or
heart disease, :func:`metaauto.evaluation.domains.transfer_report` adapts the model to each meta-test
user's K ratings (MAE, RMSE, nDCG@10 against the recsys baselines) or to K patients per class of the
held-out site (AUROC and balanced accuracy against the clinical baselines). The flow only publishes the
report (a markdown and a table artifact, an MLflow run).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from flows.common import artifact_key, load, run_link
from flows.params import TransferParams


class TransferError(Exception):
    pass


try:  # a MetaautoError, so the CLI prints it as bad input
    from metaauto.errors import MetaautoError

    class TransferError(MetaautoError, ValueError):  # type: ignore[no-redef]
        """The model cannot be applied to the target collection."""
except ImportError:  # pragma: no cover
    pass


@task(name="load-model", cache_policy=NONE)
def load_model_task(uri: str) -> Any:
    from metaauto.downstream.loading import load

    return load(uri)


@task(name="adapt-and-score", cache_policy=NONE)
def adapt_and_score(model: Any, collection: Any, params: TransferParams) -> Any:
    from metaauto.evaluation import compare
    from metaauto.evaluation.baselines import PretrainBaseline, ScratchBaseline

    learner = model.learner
    backbone = getattr(learner.model, "spec", None)
    baselines = ([ScratchBaseline(backbone, steps=params.scratch_steps, seed=params.seed),
                  PretrainBaseline(backbone, pretrain_steps=params.pretrain_steps, seed=params.seed)]
                 if params.baselines and backbone else [])
    target = params.target
    return compare(learner, collection, baselines=baselines, split=params.split, ways=target.ways, shots=target.shots,
                   queries=target.queries, tasks=params.tasks, seed=params.seed, device=params.device)


@task(name="domain-report", cache_policy=NONE)
def domain_report_task(model: Any, collection: Any, params: TransferParams) -> Any:
    from metaauto.evaluation.domains import transfer_report

    return transfer_report(model.learner, collection, shots=params.target.shots, split=params.split, tasks=params.tasks,
                           seed=params.seed, model=model, **params.domain_options)


def publish_domain_report(report: Any, params: TransferParams, experiment: str) -> dict[str, Any]:
    """The domain report as an MLflow run and two Prefect artifacts (markdown with the verdict, table)."""
    from prefect.artifacts import create_table_artifact

    from metaauto.tracking.run import TrackedRun

    run = TrackedRun.start(run_name=f"transfer-{report.collection}-k{report.shots}", experiment=experiment,
                           tags={"metaauto.kind": "transfer", "model_uri": params.model_uri, "collection": report.collection,
                                 "domain": report.domain})
    with run:
        run.log_metrics(report.mlflow_metrics())
        run.log_params({"model_uri": params.model_uri, "collection": report.collection, "target": report.target,
                        "split": params.split, "shots": report.shots, "units": report.units, "seed": params.seed,
                        **{f"option.{k}": v for k, v in params.domain_options.items()}})
        run.log_json({"rows": report.rows, "metrics": report.metrics, "notes": report.notes,
                      "beats_best_baseline": report.beats_best_baseline()}, "transfer/report.json")
    markdown = report.markdown(f"Transfer of `{params.model_uri}` to {report.target}")
    markdown += f"\n\nMLflow run {run_link(run.client, run.run_id)}."
    key = artifact_key("transfer", report.collection)
    create_markdown_artifact(markdown=markdown, key=key, description=f"{params.model_uri} adapted to {report.target}")
    create_table_artifact(table=report.table(), key=artifact_key("transfer-table", report.collection, f"k{report.shots}"),
                          description=f"{report.domain}: every method at K={report.shots}")
    return {"model_uri": params.model_uri, "collection": report.collection, "domain": report.domain,
            "target": report.target, "shots": report.shots, "units": report.units, "metric": report.primary,
            "metrics": list(report.metrics), "results": report.rows, "beats_best_baseline": report.beats_best_baseline(),
            "best_baseline": {m: report.best_baseline(m)[0] for m in report.metrics}, "run_id": run.run_id}


@flow(name="transfer-to-domain", log_prints=True)
def transfer_to_domain(params: TransferParams = TransferParams(), experiment: str = "metaauto") -> dict[str, Any]:
    """Adapt ``models:/NAME@champion`` to a new collection and report it against the baselines."""
    from metaauto.tracking.run import TrackedRun

    logger = get_run_logger()
    model = load_model_task(params.model_uri)
    collection = load(params.target)
    expected = list(model.spec.input_shape)
    if list(collection.input_shape) != expected or collection.task_type != model.task_type:
        raise TransferError(f"{params.model_uri} takes {model.task_type} inputs of shape {tuple(expected)}; collection "
                            f"{collection.name} is {collection.task_type} with inputs of shape {tuple(collection.input_shape)}")
    if model.spec.max_ways is not None and collection.task_type == "classification" and params.target.ways > model.spec.max_ways:
        raise TransferError(f"{params.model_uri} has a {model.spec.max_ways}-way head; ways={params.target.ways} does not fit")
    from metaauto.evaluation.domains import domain_of

    if domain_of(collection) is not None:
        report = domain_report_task(model, collection, params)
        result = publish_domain_report(report, params, experiment)
        logger.info("transfer to %s at K=%d: %s; beats the best baseline: %s", report.target, report.shots,
                    [(r["method"], round(r[report.primary], 4)) for r in report.rows], result["beats_best_baseline"])
        return result
    comparison = adapt_and_score(model, collection, params)
    name = model.learner.name
    ours = comparison.results[name]
    run = TrackedRun.start(run_name=f"transfer-{collection.name}", experiment=experiment,
                           tags={"metaauto.kind": "transfer", "model_uri": params.model_uri, "collection": collection.name})
    with run:
        metrics = {f"transfer/{ours.metric}": ours.mean, "transfer/ci95": ours.ci95}
        for other, r in comparison.results.items():
            if other != name:
                metrics[f"transfer/baseline/{other}/{ours.metric}"] = r.mean
        run.log_metrics(metrics)
        run.log_params({"model_uri": params.model_uri, "collection": collection.name, "fingerprint": collection.fingerprint,
                        "split": params.split, "ways": params.target.ways, "shots": params.target.shots, "tasks": params.tasks})
    rows = [{"method": n, ours.metric: r.mean, "ci95": r.ci95,
             "paired_difference": (None if n == name else comparison.paired[n][0])} for n, r in comparison.results.items()]
    lines = [f"# Transfer of `{params.model_uri}` to `{collection.name}`", "",
             f"{params.tasks} {params.split} episodes, {params.target.ways}-way {params.target.shots}-shot; "
             f"MLflow run {run_link(run.client, run.run_id)}.", "",
             f"| method | {ours.metric} | 95% CI |", "|---|---|---|",
             *[f"| {r['method']} | {r[ours.metric]:.4f} | {r['ci95']:.4f} |" for r in rows]]
    create_markdown_artifact(markdown="\n".join(lines), key=artifact_key("transfer", collection.name),
                             description=f"{params.model_uri} adapted to {collection.name}")
    logger.info("transfer to %s: %s", collection.name, rows)
    return {"model_uri": params.model_uri, "collection": collection.name, "metric": ours.metric, "results": rows,
            "run_id": run.run_id}
