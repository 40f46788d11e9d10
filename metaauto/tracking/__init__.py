"""MLflow tracking for metaauto: runs, stepped metrics, datasets, figures and pyfunc models.

Everything goes through :class:`~mlflow.MlflowClient` with explicit run ids (:class:`TrackedRun`), so
tracking works from threads, Prefect tasks and parallel Optuna trials. The store is
``MLFLOW_TRACKING_URI`` or, by default, ``sqlite:///<METAAUTO_HOME>/mlflow/mlflow.db``
(:func:`tracking_uri`). Registered versions are promoted and rolled back by evidence in
:mod:`metaauto.tracking.promotion`.

Names are imported on first use only because importing MLflow's model machinery (and PyTorch, through
the training module) is slow: ``from metaauto.tracking import tracking_uri`` stays light. (The lazy
exports once also kept MLflow promotion, then a top-level module importing this package, out of an
import cycle; inside the package it imports :mod:`~metaauto.tracking.store` directly and no cycle is left.)
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
    "PromotionDecision": "metaauto.tracking.promotion",
    "promote": "metaauto.tracking.promotion",
    "rollback": "metaauto.tracking.promotion",
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
