"""Small helpers the flows share: building a collection from its parameters, naming artifacts, MLflow links."""

from __future__ import annotations

import re
from typing import Any

from flows.params import CollectionParams


def load(params: CollectionParams) -> Any:
    """The collection the parameters name (validated by the library's loaders: bad input raises there)."""
    from metaauto.tasks import load_collection

    return load_collection(params.collection, data_dir=params.data_dir or None, **params.options)


def artifact_key(*parts: Any) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    key = "-".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", key.lower())).strip("-")[:100] or "metaauto"


def run_link(client: Any, run_id: str | None) -> str:
    """A markdown link to the MLflow run on a tracking server, else the run id and the store to open."""
    if not run_id:
        return ""
    uri = str(client.tracking_uri)
    if uri.startswith(("http://", "https://")):
        experiment = client.get_run(run_id).info.experiment_id
        return f"[{run_id[:8]}]({uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id})"
    return f"`{run_id}`"


def mlflow_ui_command(client: Any) -> str:
    uri = str(client.tracking_uri)
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"
