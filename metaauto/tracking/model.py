"""Log a trained learner as an MLflow pyfunc model, without pickle and without the fluent API.

The model directory MLflow stores is::

    MLmodel                      flavor pyfunc, signature, input example, run and model ids
    model_code.py                the "models from code" script naming MetaLearnerPyfunc
    artifacts/learner/           model.safetensors + learner.json (hparams, backbone, input spec)
    input_example.json, serving_input_example.json, requirements.txt, python_env.yaml, conda.yaml

The steps of :meth:`mlflow.models.Model.log` are done here with an explicit client and run id (create
the LoggedModel, record it as the run's output, upload the directory, mark it READY), because
``Model.log`` reads the process-global tracking URI and active run.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model, ModelSignature

from metaauto.learners import Learner, save_learner
from metaauto.downstream.pyfunc import episode_frame, input_schema, output_schema
from metaauto.downstream.sklearn import MetaModel
from metaauto.downstream.spec import IO_KEY, LEARNER_ARTIFACT, InputSpec
from metaauto.tracking.run import TrackedRun

MODEL_CODE = Path(__file__).with_name("model_code.py")
#: name of the logged model inside a run (``runs:/<run_id>/model``)
MODEL_NAME = "model"


@dataclass(frozen=True)
class LoggedMetaModel:
    model_id: str
    artifact_location: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.model_id}"

    @property
    def run_uri(self) -> str:
        return f"runs:/{self.run_id}/{MODEL_NAME}"


def save_meta_model(
    learner: Learner, collection: Any, directory: str | os.PathLike, *, ways: int | None, shots: int, queries: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """``save_learner`` plus the input specification that :func:`metaauto.load` and the pyfunc need."""
    spec = InputSpec.for_collection(collection, learner, ways, shots, queries)
    return save_learner(learner, directory, extra={**(extra or {}), IO_KEY: spec.to_dict()})


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("mlflow", "torch", "numpy", "pandas", "safetensors", "scikit-learn", "scipy"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def log_meta_model(
    run: TrackedRun,
    learner: Learner,
    collection: Any,
    *,
    ways: int | None,
    shots: int,
    queries: int,
    step: int = 0,
    tags: dict[str, str] | None = None,
) -> LoggedMetaModel:
    """Log ``learner`` as the pyfunc model ``model`` of ``run`` (see the module docstring)."""
    client = run.client
    run_info = client.get_run(run.run_id)
    params = {k: v for k, v in run_info.data.params.items()}
    with tempfile.TemporaryDirectory(prefix="metaauto-log-") as tmp:
        learner_dir = save_meta_model(
            learner, collection, Path(tmp) / LEARNER_ARTIFACT, ways=ways, shots=shots, queries=queries
        )
        meta = MetaModel.from_directory(learner_dir)
        example_batch = collection.sample(
            "test", ways if collection.task_type == "classification" else None, shots, queries, tasks=1, seed=0
        )
        example = episode_frame(meta, example_batch, tasks=1, queries=max(1, min(queries, 3)))
        signature = ModelSignature(inputs=input_schema(meta), outputs=output_schema(meta))
        logged = client.create_logged_model(
            run_info.info.experiment_id,
            name=MODEL_NAME,
            source_run_id=run.run_id,
            params=params,
            tags=tags,
            model_type="metaauto-meta-learner",
        )
        try:
            local = Path(tmp) / "mlflow-model"
            with warnings.catch_warnings():  # the signature is explicit: MLflow's integer-column hint is moot
                warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
                mlflow.pyfunc.save_model(
                    path=str(local),
                    python_model=str(MODEL_CODE),
                    artifacts={LEARNER_ARTIFACT: str(learner_dir)},
                    signature=signature,
                    input_example=example,
                    pip_requirements=_requirements(),
                    mlflow_model=Model(
                        artifact_path=logged.artifact_location,
                        model_uuid=logged.model_id,
                        run_id=run.run_id,
                        model_id=logged.model_id,
                    ),
                )
            client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=step)])
            client.log_model_artifacts(logged.model_id, str(local))
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        except BaseException:
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
    return LoggedMetaModel(model_id=logged.model_id, artifact_location=logged.artifact_location, run_id=run.run_id)
