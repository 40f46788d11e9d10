"""Which MLflow store metaauto talks to, and the experiment its runs land in.

The store is ``MLFLOW_TRACKING_URI`` when set (any tracking server, or a database URI), and otherwise an
embedded SQLite database under the project home: ``sqlite:///<home>/mlflow/mlflow.db`` with artifacts in
``<home>/mlflow/artifacts``. MLflow's own default (``sqlite:///mlflow.db`` and ``./mlruns`` in the
working directory) is never used, so runs do not scatter across whichever folders commands were started
from.

Every client is built with explicit tracking and registry URIs: MLflow's module-level functions read a
process-global URI, which a library must neither rely on nor change behind its caller's back.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from metaauto.config import home_dir

#: the experiment runs are logged to unless told otherwise
DEFAULT_EXPERIMENT = "metaauto"


def mlflow_dir() -> Path:
    """``<home>/mlflow``: the embedded store's database and artifacts."""
    path = home_dir() / "mlflow"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store under the project home."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    return f"sqlite:///{mlflow_dir() / 'mlflow.db'}"


def registry_uri(tracking: str | None = None) -> str:
    """``MLFLOW_REGISTRY_URI`` if set, else the tracking store (MLflow's own convention)."""
    uri = os.environ.get("MLFLOW_REGISTRY_URI", "").strip()
    return uri or (tracking or tracking_uri())


def is_embedded(uri: str) -> bool:
    """Whether ``uri`` is a database or directory this process writes itself (no tracking server).

    Such stores have no server to pick an artifact root, and MLflow would fall back to ``./mlruns``
    relative to the working directory; experiments created through them get an explicit one instead.
    """
    return urlparse(uri).scheme not in ("http", "https", "databricks", "databricks-uc", "uc")


def artifact_root() -> str:
    """Where the embedded store keeps artifacts (a ``file://`` URI)."""
    path = mlflow_dir() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def get_client(uri: str | None = None) -> MlflowClient:
    """An :class:`~mlflow.MlflowClient` bound to ``uri`` (default :func:`tracking_uri`) and its registry."""
    uri = uri or tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=registry_uri(uri))


#: read by the MLflow 3 UI to choose an experiment's landing page
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


def ensure_experiment(client: MlflowClient, name: str = DEFAULT_EXPERIMENT) -> str:
    """The id of experiment ``name``, created on first use (safe when two processes race to create it)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    location = artifact_root() if is_embedded(client.tracking_uri) else None
    try:
        # the kind tag makes the MLflow UI open the experiment on its training-runs table, not the GenAI overview
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: "custom_model_development"})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


__all__ = [
    "DEFAULT_EXPERIMENT",
    "artifact_root",
    "ensure_experiment",
    "get_client",
    "is_embedded",
    "mlflow_dir",
    "registry_uri",
    "tracking_uri",
]
