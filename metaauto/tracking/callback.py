"""Stream a meta-training run's steps and validations into an MLflow run.

Metric names group under the MLflow UI's prefixes: ``meta_train/loss``, ``meta_train/<metric>``,
``meta_train/tasks_per_s``, ``meta_train/lr`` every logged step, and ``meta_val/<metric>``,
``meta_val/ci95``, ``meta_val/loss`` every validation, where ``<metric>`` is ``accuracy`` or ``mse``.
Step records are buffered and written in batches, because one store round-trip per meta-update would
cost more than the update itself on small models; validations flush the buffer so that the UI's curves
stay current. Batches go out on a background thread, in order: with a tracking server each round trip
is tens of milliseconds, which a trial of a few seconds would otherwise wait for a dozen times.
:meth:`MlflowCallback.close` waits for them (and raises what the store raised); the run is closed after.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
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
        self._sender: ThreadPoolExecutor | None = None
        self._sent: list[Future] = []

    def _now(self) -> int:
        return int(time.time() * 1000)

    def send(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Call ``fn`` on the sender thread, after everything sent before it (it writes to this run's store)."""
        if self._sender is None:
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-metrics")
        self._sent = [f for f in self._sent if not f.done() or f.exception() is not None]
        self._sent.append(self._sender.submit(fn, *args, **kwargs))

    def flush(self) -> None:
        """Hand the buffered records to the sender thread (one ``log_batch`` per batch, in order)."""
        if self._pending:
            pending, self._pending = self._pending, []
            self.send(self.run.log_metric_records, pending)

    def close(self) -> None:
        """Flush, wait until every batch is in the store, and re-raise the first failure."""
        self.flush()
        sent, self._sent = self._sent, []
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None
        for future in sent:
            future.result()

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
        self.send(self.run.log_metrics, {k: v for k, v in best.items() if v is not None}, step=result.final_step)
