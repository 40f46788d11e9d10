"""MLflow tracking for metaauto: runs, stepped metrics, datasets, figures and pyfunc models.

Everything goes through :class:`~mlflow.MlflowClient` with explicit run ids (:class:`TrackedRun`), so
tracking works from threads, Prefect tasks and parallel Optuna trials. The store is
``MLFLOW_TRACKING_URI`` or, by default, ``sqlite:///<METAAUTO_HOME>/mlflow/mlflow.db``
(:func:`tracking_uri`). Names are imported on first use: ``metaauto.registry`` and this package import
each other's modules, and importing MLflow's model machinery is slow.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_EXPERIMENT": "metaauto.tracking.store",
    "ensure_experiment": "metaauto.tracking.store",
    "get_client": "metaauto.tracking.store",
    "tracking_uri": "metaauto.tracking.store",
    "TrackedRun": "metaauto.tracking.run",
    "MlflowCallback": "metaauto.tracking.callback",
    "LoggedMetaModel": "metaauto.tracking.model",
    "log_meta_model": "metaauto.tracking.model",
    "save_meta_model": "metaauto.tracking.model",
    "EvalSettings": "metaauto.tracking.training",
    "TrackedTraining": "metaauto.tracking.training",
    "TrainingSummary": "metaauto.tracking.training",
    "train_tracked": "metaauto.tracking.training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'metaauto.tracking' has no attribute {name!r}")
