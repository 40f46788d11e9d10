"""A handle on one MLflow run that names its run id in every call.

MLflow's fluent API (``mlflow.log_metric`` ...) writes to a thread-local "active run", which is wrong
inside Prefect tasks, Optuna trials running in threads, or any code that tracks several runs at once.
:class:`TrackedRun` wraps an :class:`~mlflow.MlflowClient` and a run id instead, so it can be passed
around and used from any thread. Used as a context manager it ends the run ``FINISHED``, or ``FAILED``
with the error recorded as a tag when the block raises (``KILLED`` on Ctrl-C): a crashed training never
leaves a run ``RUNNING``.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlflow import MlflowClient
from mlflow.data.dataset import Dataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from metaauto.tracking.store import DEFAULT_EXPERIMENT, ensure_experiment, get_client

# MLflow's per-request limits (log_batch) and value lengths, kept well inside the server's checks.
_BATCH_PARAMS = 100
_BATCH_METRICS = 1000
_PARAM_VALUE_MAX = 6000
_TAG_VALUE_MAX = 5000


def _param_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, sort_keys=True, default=str)
    text = str(value)
    return text if len(text) <= _PARAM_VALUE_MAX else text[: _PARAM_VALUE_MAX - 3] + "..."


class TrackedRun:
    """One MLflow run, addressed by id; see the module docstring."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._ended = False

    @classmethod
    def start(
        cls,
        *,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        client: MlflowClient | None = None,
        experiment_id: str | None = None,
    ) -> "TrackedRun":
        """Create a run in ``experiment`` (created if missing) on ``client``'s store; a known
        ``experiment_id`` saves the lookup (a round trip per run on a tracking server)."""
        client = client or get_client()
        experiment_id = experiment_id or ensure_experiment(client, experiment)
        run = client.create_run(
            experiment_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items()}
        )
        return cls(client, run.info.run_id)

    @property
    def experiment_id(self) -> str:
        return self.client.get_run(self.run_id).info.experiment_id

    # -- values ------------------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (non-string values are JSON-encoded; ``None`` is written as ``"None"``)."""
        items = [Param(str(k), _param_value(v)) for k, v in params.items()]
        for start in range(0, len(items), _BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=items[start : start + _BATCH_PARAMS])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(str(k), str(v)[:_TAG_VALUE_MAX]) for k, v in tags.items()]
        for start in range(0, len(items), _BATCH_PARAMS):
            self.client.log_batch(self.run_id, tags=items[start : start + _BATCH_PARAMS])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, timestamp: int | None = None) -> None:
        """Log finite metric values at ``step`` (NaN/inf are skipped: the store would reject them)."""
        timestamp = timestamp if timestamp is not None else int(time.time() * 1000)
        self.log_metric_records(
            Metric(k, float(v), timestamp, int(step)) for k, v in metrics.items() if v is not None and math.isfinite(v)
        )

    def log(self, metrics: Mapping[str, float] | None = None, step: int = 0,
            tags: Mapping[str, Any] | None = None) -> None:
        """Finite metrics at ``step`` and tags in one ``log_batch`` (one round trip)."""
        now = int(time.time() * 1000)
        records = [Metric(k, float(v), now, int(step)) for k, v in (metrics or {}).items() if v is not None and math.isfinite(v)]
        tag_items = [RunTag(str(k), str(v)[:_TAG_VALUE_MAX]) for k, v in (tags or {}).items()]
        if len(records) <= _BATCH_METRICS and len(tag_items) <= _BATCH_PARAMS:
            if records or tag_items:
                self.client.log_batch(self.run_id, metrics=records, tags=tag_items)
            return
        self.log_metric_records(records)
        self.set_tags(tags or {})

    def log_metric_records(self, records: Iterable[Metric]) -> None:
        records = list(records)
        for start in range(0, len(records), _BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=records[start : start + _BATCH_METRICS])

    def log_dataset(self, dataset: Dataset, context: str, tags: Mapping[str, str] | None = None) -> None:
        """``mlflow.log_input`` for this run: the dataset appears under the run's inputs and filters."""
        input_tags = [InputTag(k, str(v)) for k, v in (tags or {}).items()]
        input_tags.append(InputTag(MLFLOW_DATASET_CONTEXT, context))
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), input_tags)])

    # -- artifacts ---------------------------------------------------------------------------------

    def log_json(self, data: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib figure as PNG and close it (figures left open leak memory in long jobs)."""
        import matplotlib.pyplot as plt

        try:
            self.client.log_figure(self.run_id, figure, artifact_file, save_kwargs={"dpi": 110, "bbox_inches": "tight"})
        finally:
            plt.close(figure)

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    # -- lifecycle ---------------------------------------------------------------------------------

    def end(self, status: str = "FINISHED") -> None:
        """Terminate the run once (later calls are ignored, so ``end`` in a ``finally`` is safe)."""
        if self._ended:
            return
        RunStatus.from_string(status)  # rejects an unknown status before anything is written
        self.client.set_terminated(self.run_id, status=status)
        self._ended = True

    def fail(self, error: BaseException) -> None:
        """Record ``error`` on the run and mark it ``FAILED`` (``KILLED`` for an interrupt)."""
        if self._ended:
            return
        message = f"{type(error).__name__}: {error}"
        try:
            self.set_tags({"metaauto.error": message})
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "error.txt"
                path.write_text("".join(traceback.format_exception(error)))
                self.client.log_artifact(self.run_id, str(path))
        finally:
            self.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")

    def __enter__(self) -> "TrackedRun":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        else:
            self.end("FINISHED")
