"""Stream a meta-training run's steps and validations into an MLflow run.

Metric names group under the MLflow UI's prefixes: ``meta_train/loss``, ``meta_train/<metric>``,
``meta_train/tasks_per_s``, ``meta_train/lr`` every logged step, and ``meta_val/<metric>``,
``meta_val/ci95``, ``meta_val/loss`` every validation, where ``<metric>`` is ``accuracy`` or ``mse``.
Step records are buffered and written in batches, because one store round-trip per meta-update would
cost more than the update itself on small models; validations flush the buffer so that the UI's curves
stay current.
"""

from __future__ import annotations

import time
from typing import Any

from mlflow.entities import Metric

from metaauto.engine.callbacks import Callback, RunState
from metaauto.engine.history import StepRecord, ValidationRecord
from metaauto.tracking.run import TrackedRun


class MlflowCallback(Callback):
    """A :class:`~metaauto.engine.callbacks.Callback` writing to ``run`` (explicit run id, any thread)."""

    def __init__(self, run: TrackedRun, flush_every: int = 50) -> None:
        self.run = run
        self.flush_every = max(1, int(flush_every))
        self._pending: list[Metric] = []

    def _now(self) -> int:
        return int(time.time() * 1000)

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self.run.log_metric_records(pending)

    def on_step(self, run: RunState, record: StepRecord) -> None:
        metric = run.history.metric
        now = self._now()
        values = {
            "meta_train/loss": record.loss,
            f"meta_train/{metric}": record.metric,
            "meta_train/tasks_per_s": record.tasks_per_s,
            "meta_train/lr": record.lr,
        }
        self._pending.extend(Metric(k, float(v), now, record.step) for k, v in values.items())
        if len(self._pending) >= self.flush_every * len(values):
            self.flush()

    def on_validation(self, run: RunState, record: ValidationRecord) -> None:
        metric = run.history.metric
        now = self._now()
        values = {f"meta_val/{metric}": record.metric, "meta_val/ci95": record.ci95, "meta_val/loss": record.loss}
        self._pending.extend(Metric(k, float(v), now, record.step) for k, v in values.items())
        self.flush()

    def on_train_end(self, run: RunState, result: Any) -> None:
        self.flush()
        best = {"best_step": result.best_step, f"best_meta_val_{run.history.metric}": result.best_value}
        self.run.log_metrics({k: v for k, v in best.items() if v is not None}, step=result.final_step)
