"""The meta-training loop.

One step samples a meta-batch of episodes (seeded by ``(config.seed, step)``), computes the learner's
meta-loss under autocast when mixed precision is on, and takes an optimiser step (with loss scaling
and gradient clipping as configured). Every ``val_every`` steps the learner is scored on the same
fixed validation episodes, so that validation curves of different runs and steps are comparable; the
best weights are kept and restored at the end. Checkpoints make a crashed run resumable exactly.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable

import torch
from tqdm.auto import tqdm

from metaauto.engine.callbacks import CallbackList, RunState
from metaauto.engine.checkpoint import checkpoint_path, describe_mismatch, load_checkpoint, save_checkpoint
from metaauto.engine.config import TRAIN_STREAM, VAL_STREAM, TrainConfig, derive_seed, digest, run_identity
from metaauto.engine.device import Precision, forked_rng, resolve_device, resolve_precision, rng_state, set_rng_state
from metaauto.engine.history import History, StepRecord, ValidationRecord
from metaauto.engine.inference import score_episodes
from metaauto.engine.result import TrainResult
from metaauto.engine.stats import mean_ci95
from metaauto.errors import DivergenceError, TrainingError
from metaauto.runtime import tune_cpu_allocator

# Seed stream for torch's own generators during training (dropout, random heads), distinct from the
# episode streams.
_TORCH_STREAM = 2


def _make_optimizer(config: TrainConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.meta_lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.meta_lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.meta_lr, momentum=0.9, weight_decay=config.weight_decay)


def _improves(value: float, best: float | None, higher_is_better: bool, min_delta: float) -> bool:
    if best is None:
        return True
    return value > best + min_delta if higher_is_better else value < best - min_delta


def _clone_state(learner: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.state_dict().items()}


class _Trainer:
    """One run's mutable state; :func:`meta_train` is its public face."""

    def __init__(self, learner: Any, collection: Any, config: TrainConfig, callbacks: Iterable[Any]) -> None:
        self.learner = learner
        self.collection = collection
        self.config = config
        self.callbacks = CallbackList(callbacks)
        self.device = resolve_device(config.device)
        self.precision: Precision = resolve_precision(config.amp, self.device)
        task_type = collection.task_type
        supported = getattr(learner, "task_types", (task_type,))
        if task_type not in supported:
            raise TrainingError(
                f"learner {getattr(learner, 'name', type(learner).__name__)!r} solves {' and '.join(supported)} "
                f"tasks, but collection {collection.name!r} holds {task_type} tasks"
            )
        self.ways = config.ways if task_type == "classification" else None
        if task_type == "classification" and self.ways is None:
            raise TrainingError(f"collection {collection.name!r} is a classification collection: give ways")
        self.identity = run_identity(config, learner.name, learner.hparams(), collection.fingerprint)
        self.digest = digest(self.identity)

        learner.to(self.device)
        self.optimizer = _make_optimizer(config, learner.parameters())
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=config.meta_steps)
            if config.lr_schedule == "cosine"
            else None
        )
        self.scaler = self.precision.grad_scaler(self.device)
        self.state = RunState(config, learner, collection, History("accuracy" if task_type == "classification" else "mse"))
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.bad_validations = 0
        self.resumed_from: int | None = None
        self.val_batch = (
            collection.sample(
                "val", self.ways, config.shots, config.queries, tasks=config.val_tasks,
                seed=derive_seed(config.seed, VAL_STREAM),
            )
            if config.validates
            else None
        )

    # -- checkpoints -----------------------------------------------------------------------------

    def _existing_checkpoint(self) -> dict[str, Any] | None:
        if self.config.checkpoint_dir is None:
            if self.config.resume:
                raise TrainingError("resume=True needs a checkpoint_dir to resume from")
            return None
        saved = load_checkpoint(self.config.checkpoint_dir)
        if saved is None:
            return None
        path = checkpoint_path(self.config.checkpoint_dir)
        if not self.config.resume:
            raise TrainingError(
                f"{path} already holds a checkpoint; pass resume=True (CLI: --resume) to continue that run, "
                "or use another checkpoint directory"
            )
        if saved["digest"] != self.digest:
            raise TrainingError(
                f"cannot resume from {path}: it was written by a run with other settings "
                f"({describe_mismatch(saved['identity'], self.identity)})"
            )
        return saved

    def _restore(self, saved: dict[str, Any]) -> None:
        self.learner.load_state_dict(saved["learner"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"], self.device)
        self.state.history = History.from_dict(saved["history"])
        self.state.step = int(saved["step"])
        self.state.best_step = saved["best_step"]
        self.state.best_value = saved["best_value"]
        self.state.stop_reason = saved["stop_reason"]
        self.bad_validations = int(saved["bad_validations"])
        best = saved["best_weights"]
        self.best_weights = {k: v.to(self.device) for k, v in best.items()} if best is not None else None
        self.resumed_from = self.state.step

    def _save(self) -> None:
        save_checkpoint(
            self.config.checkpoint_dir,
            {
                "digest": self.digest,
                "identity": self.identity,
                "step": self.state.step,
                "learner": self.learner.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict(),
                "rng": rng_state(self.device),
                "history": self.state.history.to_dict(),
                "best_step": self.state.best_step,
                "best_value": self.state.best_value,
                "best_weights": self.best_weights,
                "bad_validations": self.bad_validations,
                "stop_reason": self.state.stop_reason,
            },
        )

    # -- steps -----------------------------------------------------------------------------------

    def _train_step(self, step: int) -> StepRecord:
        config = self.config
        started = time.perf_counter()
        batch = self.collection.sample(
            "train", self.ways, config.shots, config.queries, tasks=config.meta_batch_size,
            seed=derive_seed(config.seed, TRAIN_STREAM, step),
        ).to(self.device, non_blocking=True)
        self.learner.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast(self.device):
            out = self.learner.forward_episodes(batch)
        loss = out.loss.float()
        loss_value = loss.item()
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"the meta-loss became {loss_value} at step {step}; lower meta_lr (now {config.meta_lr}) "
                "or set grad_clip"
            )
        self.scaler.scale(loss).backward()
        if config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.learner.parameters(), config.grad_clip)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        metric = out.per_task_metric.float().mean().item()
        elapsed = time.perf_counter() - started
        return StepRecord(step=step, loss=loss_value, metric=metric, tasks_per_s=config.meta_batch_size / elapsed, lr=lr)

    def _validate(self, step: int) -> ValidationRecord:
        per_task, loss = score_episodes(
            self.learner, self.val_batch, device=self.device, precision=self.precision,
            batch_size=self.config.eval_batch_size or self.config.meta_batch_size,
        )
        value, ci95 = mean_ci95(per_task)
        state = self.state
        improved = _improves(value, state.best_value, state.history.higher_is_better, self.config.min_delta)
        if improved:
            state.best_step, state.best_value = step, value
            self.best_weights = _clone_state(self.learner)
            self.bad_validations = 0
        else:
            self.bad_validations += 1
        return ValidationRecord(step=step, metric=value, ci95=ci95, loss=loss, is_best=improved)

    # -- loop ------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        config, state = self.config, self.state
        started = time.perf_counter()
        saved = self._existing_checkpoint()
        with forked_rng(self.device, derive_seed(config.seed, _TORCH_STREAM)):
            if saved is not None:
                self._restore(saved)
            bar = tqdm(
                total=config.meta_steps, initial=state.step, desc=f"meta-train {self.learner.name}", unit="step",
                disable=not config.progress, file=sys.stderr, dynamic_ncols=True,
            )
            try:
                self._loop(bar)
            finally:
                bar.close()
        if self.best_weights is not None:
            self.learner.load_state_dict(self.best_weights)
        result = TrainResult(
            learner=self.learner, config=config, history=state.history, final_step=state.step,
            best_step=state.best_step, best_value=state.best_value, stop_reason=state.stop_reason or "completed",
            resumed_from=self.resumed_from, device=str(self.device), precision=self.precision.name,
            digest=self.digest, wall_time_s=time.perf_counter() - started,
        )
        self.callbacks("on_train_end", state, result)
        return result

    def _loop(self, bar: tqdm) -> None:
        config, state = self.config, self.state
        self.callbacks("on_train_start", state)
        postfix: dict[str, str] = {}
        if state.best_value is not None:
            postfix["best"] = f"{state.best_value:.4f}"
        while state.step < config.meta_steps and not state.stop_requested:
            step = state.step + 1
            record = self._train_step(step)
            state.step = step
            state.history.train.append(record)
            last = step == config.meta_steps
            if step % config.log_every == 0 or last:
                postfix.update(loss=f"{record.loss:.4f}", tasks_s=f"{record.tasks_per_s:.1f}")
                bar.set_postfix(postfix, refresh=False)
                self.callbacks("on_step", state, record)
            bar.update(1)
            if config.validates and (step % config.val_every == 0 or last or state.stop_requested):
                val = self._validate(step)
                state.history.val.append(val)
                postfix.update(val=f"{val.metric:.4f}", best=f"{state.best_value:.4f}")
                bar.set_postfix(postfix)
                if config.patience is not None and self.bad_validations >= config.patience and not last:
                    state.request_stop("early_stopping")
                self.callbacks("on_validation", state, val)
            if config.checkpoint_dir is not None and (
                step % config.checkpoint_every == 0 or last or state.stop_requested
            ):
                self._save()


def meta_train(learner: Any, collection: Any, config: TrainConfig | None = None, callbacks: Iterable[Any] = ()) -> TrainResult:
    """Meta-train ``learner`` on episodes of ``collection``'s ``"train"`` split.

    Validation (on ``"val"``), early stopping, checkpointing and resuming follow ``config``; see
    :class:`~metaauto.engine.TrainConfig`. Exceptions raised by callbacks propagate unchanged.
    Training is a function of ``config.seed`` and the learner's initial weights alone: two runs with
    equal inputs produce bitwise-equal weights and histories (on the same device), and so does a run
    that was interrupted and resumed from its checkpoint.
    """
    tune_cpu_allocator()
    return _Trainer(learner, collection, config or TrainConfig(), callbacks).run()
