"""``ingest-collection``: load and validate a collection, fingerprint it, describe it, log it to MLflow.

Validation is the library's (the collection loaders check their source when they load it), so a bad
table fails this flow with exactly the message ``metaauto train`` would print.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from flows.common import artifact_key, load, run_link
from flows.params import CollectionParams


@dataclass(frozen=True)
class IngestResult:
    """What ``ingest-collection`` found: the collection's identity, its splits, meta-features, warnings and MLflow run."""

    collection: str
    fingerprint: str
    task_type: str
    #: one row per split: ``split``, ``units``, ``unit``, ``examples``
    splits: list[dict[str, Any]]
    meta_features: dict[str, Any]
    warnings: list[str]
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def meta_features(collection: Any, params: CollectionParams) -> dict[str, Any]:
    """The collection's meta-features as the search's knowledge base computes them (warm starts use the same)."""
    from metaauto.search.knowledge import meta_features as describe

    ways = params.ways if collection.task_type == "classification" else None
    return describe(collection, ways, params.shots)


def collection_warnings(collection: Any, params: CollectionParams, caught: list[str]) -> list[str]:
    """Warnings raised while loading, plus splits too small for the requested episodes."""
    found = list(caught)
    if collection.task_type == "classification":
        for split, s in collection.summary().items():
            if s.units < params.ways:
                found.append(f"split {split!r} has {s.units} {s.unit_name}, fewer than ways={params.ways}")
            elif s.units and s.examples / s.units < params.shots + params.queries:
                found.append(f"split {split!r} has {s.examples / s.units:.1f} examples per {s.unit_name.rstrip('s')} "
                             f"on average, fewer than shots+queries={params.shots + params.queries}")
    return found


@task(name="load-collection", cache_policy=NONE, retries=0)
def load_collection_task(params: CollectionParams) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        collection = load(params)
    return collection, [str(w.message) for w in caught]


@task(name="log-dataset", cache_policy=NONE)
def log_dataset_task(collection: Any, features: dict[str, Any], found: list[str], experiment: str) -> str:
    from metaauto.tracking.run import TrackedRun
    from metaauto.tracking.training import collection_dataset

    run = TrackedRun.start(run_name=f"ingest-{collection.name}", experiment=experiment,
                           tags={"metaauto.kind": "ingest", "collection": collection.name, "fingerprint": collection.fingerprint})
    with run:
        run.log_dataset(collection_dataset(collection), context="ingest", tags={"fingerprint": collection.fingerprint})
        run.log_params({f"meta.{k}": v for k, v in features.items()})
        run.log_json({"meta_features": features, "warnings": found}, "ingest/summary.json")
    return run.run_id


def summary_markdown(collection: Any, data: CollectionParams, rows: list[dict[str, Any]], found: list[str], link: str) -> str:
    lines = [
        f"# Collection `{collection.name}`",
        "",
        f"* fingerprint `{collection.fingerprint}`, {collection.task_type}, input shape {tuple(collection.input_shape)}",
        f"* episodes: {data.ways}-way {data.shots}-shot, {data.queries} queries" if collection.task_type == "classification"
        else f"* episodes: {data.shots} support and {data.queries} query points per task",
        f"* MLflow run {link}",
        "",
        "| split | units | examples |",
        "|---|---|---|",
        *[f"| {r['split']} | {r['units']} {r['unit']} | {r['examples']} |" for r in rows],
        "",
        "## Warnings",
        *([f"* {w}" for w in found] or ["none"]),
    ]
    return "\n".join(lines)


@flow(name="ingest-collection", log_prints=True)
def ingest_collection(data: CollectionParams = CollectionParams(), experiment: str = "metaauto") -> IngestResult:
    """Load and validate a collection, log it to MLflow as a dataset and publish a summary artifact."""
    from metaauto.tracking.store import get_client

    logger = get_run_logger()
    collection, caught = load_collection_task(data)
    features = meta_features(collection, data)
    found = collection_warnings(collection, data, caught)
    run_id = log_dataset_task(collection, features, found, experiment)
    rows = [{"split": split, "units": s.units, "unit": s.unit_name, "examples": s.examples}
            for split, s in collection.summary().items()]
    create_markdown_artifact(markdown=summary_markdown(collection, data, rows, found, run_link(get_client(), run_id)),
                             key=artifact_key("ingest", collection.name), description=f"Summary of collection {collection.name}")
    create_table_artifact(table=rows, key=artifact_key("splits", collection.name), description="Units and examples per split")
    logger.info("ingested %s (%s): %s", collection.name, collection.fingerprint, rows)
    return IngestResult(collection=collection.name, fingerprint=collection.fingerprint, task_type=collection.task_type,
                        splits=rows, meta_features=features, warnings=found, run_id=run_id)
