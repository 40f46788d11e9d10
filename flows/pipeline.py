"""``meta-pipeline``: the main job, chaining the flows as subflows (each its own flow run in the UI).

ingest -> search -> evaluate and promote -> (optionally) transfer. A failure stops the chain at that
step; re-running the pipeline resumes the study, so finished trials are not trained again.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import artifact_key, mlflow_ui_command
from flows.evaluate import evaluate_and_promote
from flows.ingest import ingest_collection
from flows.params import PipelineParams
from flows.search import search_learners
from flows.transfer import transfer_to_domain


def where_to_look(evaluated: dict[str, Any]) -> dict[str, str]:
    from metaauto.tracking.store import get_client

    client = get_client()
    registered = evaluated.get("registered")
    uri = f"models:/{registered['name']}@champion" if registered else evaluated["model_uri"]
    return {
        "mlflow_ui": mlflow_ui_command(client),
        "model_uri": uri,
        "snippet": f"import metaauto; model = metaauto.load({uri!r}); clf = model.adapt(X_support, y_support); clf.predict(X_query)",
    }


@flow(name="meta-pipeline", log_prints=True)
def meta_pipeline(params: PipelineParams = PipelineParams()) -> dict[str, Any]:
    """Ingest a collection, search learners, meta-test and promote the best, then optionally transfer it."""
    ingested = ingest_collection(params.data, experiment=params.experiment)
    searched = search_learners(params.data, params.search, experiment=params.experiment)
    evaluated = evaluate_and_promote(params.data, params.search, params.evaluation, experiment=params.experiment)
    transferred = None
    if params.transfer is not None:
        transferred = transfer_to_domain(params.transfer, experiment=params.experiment)
    look = where_to_look(evaluated)
    promotion = (evaluated.get("promotion") or {}).get("description", "not registered")
    create_markdown_artifact(markdown="\n".join([
        f"# meta-pipeline on `{ingested['collection']}`", "",
        f"* study `{searched['study']}`: {searched['states']}; best trial #{searched['best_trial']} "
        f"({(searched['best_params'] or {}).get('algorithm')}, validation {searched['best_value']})",
        f"* meta-test: {evaluated['meta_test']}",
        f"* promotion: {promotion}",
        f"* model: `{look['model_uri']}`; browse with `{look['mlflow_ui']}`",
    ]), key=artifact_key("pipeline", ingested["collection"]), description="What the pipeline did")
    return {"ingest": ingested, "search": {k: v for k, v in searched.items() if k != "storage"}, "evaluation": evaluated,
            "transfer": transferred, "where_to_look": look}
