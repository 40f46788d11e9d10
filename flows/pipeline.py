"""``meta-pipeline``: the main job, chaining the flows as subflows (each its own flow run in the UI).

ingest -> search -> evaluate and promote -> (optionally) transfer. A failure stops the chain at that
step; re-running the pipeline resumes the study, so finished trials are not trained again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import artifact_key, mlflow_ui_command
from flows.evaluate import evaluate_and_promote
from flows.ingest import IngestResult, ingest_collection
from flows.params import PipelineParams
from flows.search import search_learners
from flows.transfer import transfer_to_domain


@dataclass(frozen=True)
class WhereToLook:
    """Where a user finds what the pipeline made: the MLflow UI, the model's URI and how to use it."""

    mlflow_ui: str
    model_uri: str
    snippet: str


@dataclass
class PipelineResult:
    """What each step of the pipeline returned: ``search`` is the study's summary, ``evaluation`` the same
    study with its final training (:class:`metaauto.search.SearchResult`); ``transfer`` the domain report."""

    ingest: IngestResult
    search: Any
    evaluation: Any
    transfer: dict[str, Any] | None
    where_to_look: WhereToLook

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``metaauto pipeline --json``)."""
        evaluated = self.evaluation
        return {
            "ingest": self.ingest.to_dict(), "search": self.search.to_dict(),
            "evaluation": {"study": evaluated.study_name, "best_trial": evaluated.best_trial,
                           "best_params": evaluated.best_params, **evaluated.final.summary().to_dict()},
            "transfer": self.transfer, "where_to_look": asdict(self.where_to_look),
        }


def where_to_look(evaluated: Any) -> WhereToLook:
    from metaauto.tracking.store import get_client

    tracked = evaluated.final
    uri = f"models:/{tracked.version.name}@champion" if tracked.version is not None else tracked.model_uri
    return WhereToLook(
        mlflow_ui=mlflow_ui_command(get_client()), model_uri=uri,
        snippet=f"import metaauto; model = metaauto.load({uri!r}); clf = model.adapt(X_support, y_support); clf.predict(X_query)",
    )


@flow(name="meta-pipeline", log_prints=True)
def meta_pipeline(params: PipelineParams = PipelineParams()) -> PipelineResult:
    """Ingest a collection, search learners, meta-test and promote the best, then optionally transfer it."""
    ingested = ingest_collection(params.data, experiment=params.experiment)
    searched = search_learners(params.data, params.search, experiment=params.experiment)
    evaluated = evaluate_and_promote(params.data, params.search, params.evaluation, experiment=params.experiment)
    transferred = None
    if params.transfer is not None:
        transferred = transfer_to_domain(params.transfer, experiment=params.experiment)
    look = where_to_look(evaluated)
    final = evaluated.final.summary()
    create_markdown_artifact(markdown="\n".join([
        f"# meta-pipeline on `{ingested.collection}`", "",
        f"* study `{searched.study_name}`: {searched.states}; best trial #{searched.best_trial} "
        f"({searched.best_params.get('algorithm')}, validation {searched.best_value})",
        f"* meta-test: {final.meta_test.to_dict()}",
        f"* promotion: {final.promotion.describe() if final.promotion is not None else 'not registered'}",
        f"* model: `{look.model_uri}`; browse with `{look.mlflow_ui}`",
    ]), key=artifact_key("pipeline", ingested.collection), description="What the pipeline did")
    return PipelineResult(ingest=ingested, search=searched, evaluation=evaluated, transfer=transferred, where_to_look=look)
