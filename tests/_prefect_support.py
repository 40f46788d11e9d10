"""Helpers the Prefect tests share: a module's own test server, and reading artifacts as the UI does."""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest


@pytest.fixture(scope="module")
def harness(single_thread) -> Iterator[None]:
    """Prefect's test harness (a temporary server) for one module, over the session's embedded MLflow store."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    with prefect_test_harness(server_startup_timeout=180):
        yield


def read_artifacts(keys: list[str], client: Any = None) -> dict[str, dict]:
    """The newest artifact of each key, read from the server's REST API as the UI does.

    Prefect 3.8.8's own ``read_artifacts`` sends nulls its server rejects (422), hence the raw call.
    """
    from prefect.client.orchestration import get_client

    if client is None:
        with get_client(sync_client=True) as own:
            return read_artifacts(keys, own)
    response = client._client.post("/artifacts/filter", json={
        "artifacts": {"key": {"any_": keys}}, "sort": "CREATED_DESC", "limit": 200, "offset": 0})
    response.raise_for_status()
    found: dict[str, dict] = {}
    for artifact in response.json():
        found.setdefault(artifact["key"], artifact)
    return found
