"""Turn a ``models:/`` or ``runs:/`` URI into a local copy of the model directory.

MLflow resolves these URIs through its process-global registry URI; metaauto resolves them with an
explicit client instead, so that ``metaauto.load(uri)`` honours the store it was asked about even when
the process talks to several stores (a test, a notebook comparing a server with a local database).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from metaauto.errors import MetaautoError
from metaauto.tracking.store import get_client

_VERSION = re.compile(r"^\d+$")


class ModelURIError(MetaautoError, ValueError):
    """A model URI is malformed or names nothing in the store."""


def resolve_model_version(client: MlflowClient, name: str, ref: str) -> ModelVersion:
    """``ref`` is a version number, ``@alias`` or ``latest``."""
    try:
        if ref.startswith("@"):
            return client.get_model_version_by_alias(name, ref[1:])
        if ref == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ModelURIError(f"registered model {name!r} has no versions")
            return max(versions, key=lambda mv: int(mv.version))
        if not _VERSION.match(ref):
            raise ModelURIError(f"model version must be a number, '@alias' or 'latest'; got {ref!r} for {name!r}")
        return client.get_model_version(name, ref)
    except MlflowException as exc:
        raise ModelURIError(f"cannot resolve models:/{name}{'' if ref.startswith('@') else '/'}{ref}: {exc.message}") from None


def artifact_location(uri: str, client: MlflowClient | None = None) -> str:
    """The artifact-store URI (``file://``, ``mlflow-artifacts:/``, ``s3://`` ...) the model lives at.

    Accepts ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/latest``,
    ``models:/<logged-model-id>`` and ``runs:/<run-id>/<model-name>``.
    """
    client = client or get_client()
    parsed = urlparse(uri)
    path = parsed.path.lstrip("/")
    if parsed.scheme == "models":
        if not path:
            raise ModelURIError(f"{uri!r} names no model: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        if "@" in path.split("/", 1)[0]:
            name, alias = path.split("/", 1)[0].split("@", 1)
            return client.get_model_version_download_uri(name, resolve_model_version(client, name, "@" + alias).version)
        parts = path.split("/")
        if len(parts) == 1:
            if parts[0].startswith("m-"):
                try:
                    return client.get_logged_model(parts[0]).artifact_location
                except MlflowException as exc:
                    raise ModelURIError(f"cannot resolve {uri}: {exc.message}") from None
            raise ModelURIError(f"{uri!r} gives no version: use models:/{parts[0]}@champion or models:/{parts[0]}/1")
        version = resolve_model_version(client, parts[0], parts[1])
        return client.get_model_version_download_uri(parts[0], version.version)
    if parsed.scheme == "runs":
        run_id, _, name = path.partition("/")
        if not run_id or not name:
            raise ModelURIError(f"{uri!r}: expected runs:/<run-id>/<model-name>")
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            raise ModelURIError(f"cannot resolve {uri}: {exc.message}") from None
        for output in run.outputs.model_outputs if run.outputs else []:
            model = client.get_logged_model(output.model_id)
            if model.name == name:
                return model.artifact_location
        return f"{run.info.artifact_uri.rstrip('/')}/{name}"
    raise ModelURIError(f"{uri!r} is not a models:/ or runs:/ URI")


def download_model(uri: str, client: MlflowClient | None = None, dst: str | Path | None = None) -> Path:
    """A local directory holding the model at ``uri`` (a local path is returned as is)."""
    if urlparse(uri).scheme not in ("models", "runs"):
        local = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
        if not local.exists():
            raise ModelURIError(f"{uri!r} is neither a models:/ or runs:/ URI nor an existing directory")
        return local.resolve()
    client = client or get_client()
    location = artifact_location(uri, client)
    dst = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="metaauto-model-"))
    try:
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=location,
                dst_path=str(dst),
                tracking_uri=client.tracking_uri,
            )
        )
    except MlflowException as exc:
        raise ModelURIError(f"cannot download {uri} from {location}: {exc.message}") from None
