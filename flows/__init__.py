"""Prefect flows over the metaauto library: the pipeline users run and schedule from the Prefect UI.

The flows orchestrate and hold no training logic: collections, search, training, evaluation and the
registry are :mod:`metaauto`'s. Parameters are the pydantic models of :mod:`flows.params`.
"""

from flows.evaluate import evaluate_and_promote
from flows.ingest import ingest_collection
from flows.params import CollectionParams, EvalParams, PipelineParams, SearchParams, TransferParams
from flows.pipeline import meta_pipeline
from flows.search import search_learners
from flows.transfer import transfer_to_domain

__all__ = [
    "CollectionParams",
    "EvalParams",
    "PipelineParams",
    "SearchParams",
    "TransferParams",
    "evaluate_and_promote",
    "ingest_collection",
    "meta_pipeline",
    "search_learners",
    "transfer_to_domain",
]
