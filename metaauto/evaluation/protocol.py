"""Meta-test evaluation as papers report it, with baselines scored on the very same episodes.

Episodes are drawn in fixed blocks of :data:`EPISODE_BLOCK` tasks, block ``b`` with a seed derived
from ``(seed, b)``. The set of episodes is therefore a function of ``(split, ways, shots, queries,
tasks, seed)`` alone -- not of ``batch_size`` or of which methods are scored -- so per-task values of
different methods and runs line up task by task and can be compared pairwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
from tqdm.auto import tqdm

from metaauto.engine.config import derive_seed
from metaauto.engine.device import resolve_device
from metaauto.engine.inference import score_episodes
from metaauto.evaluation.baselines import Baseline
from metaauto.evaluation.metrics import mean_ci95, paired_difference
from metaauto.runtime import tune_cpu_allocator
from metaauto.tasks.batch import TaskBatch

#: tasks sampled per block (see the module docstring)
EPISODE_BLOCK = 50
_EVAL_STREAM = 10

#: scores the tasks of a batch: ``(batch, first_task_index) -> per-task metric [tasks]``
Scorer = Callable[[TaskBatch, int], torch.Tensor]


@dataclass
class EvaluationResult:
    """Mean metric over ``tasks`` episodes with its 95% confidence interval, and every per-task value."""

    method: str
    metric: str
    mean: float
    ci95: float
    per_task: list[float]
    split: str
    ways: int | None
    shots: int
    queries: int
    tasks: int
    seed: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, per_task: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not per_task:
            data.pop("per_task")
        return data

    def __str__(self) -> str:
        scale, unit = (100.0, "%") if self.metric == "accuracy" else (1.0, "")
        return f"{self.method}: {self.metric} {self.mean * scale:.2f}{unit} +- {self.ci95 * scale:.2f}{unit} ({self.tasks} tasks)"


@dataclass
class Comparison:
    """A learner and its baselines on the same episodes, with paired differences ``learner - baseline``."""

    results: dict[str, EvaluationResult]
    #: ``name -> (mean difference, 95% CI)`` for every method other than the first
    paired: dict[str, tuple[float, float]]

    def to_dict(self, per_task: bool = False) -> dict[str, Any]:
        return {
            "results": {k: v.to_dict(per_task=per_task) for k, v in self.results.items()},
            "paired_difference": {k: {"mean": m, "ci95": c} for k, (m, c) in self.paired.items()},
        }


def iter_episodes(
    collection: Any, split: str, ways: int | None, shots: int, queries: int, tasks: int, seed: int
) -> Iterator[tuple[int, TaskBatch]]:
    """``(index of the first task, block)`` for the evaluation episodes; see the module docstring."""
    if tasks < 1:
        raise ValueError(f"tasks must be >= 1, got {tasks}")
    for block, start in enumerate(range(0, tasks, EPISODE_BLOCK)):
        size = min(EPISODE_BLOCK, tasks - start)
        yield start, collection.sample(
            split, ways, shots, queries, tasks=size, seed=derive_seed(seed, _EVAL_STREAM, block)
        )


def learner_scorer(
    learner: torch.nn.Module, device: torch.device, batch_size: int, inner_steps: int | None = None
) -> Scorer:
    def score(batch: TaskBatch, first_task: int) -> torch.Tensor:
        return score_episodes(learner, batch, device=device, batch_size=batch_size, inner_steps=inner_steps)[0]

    return score


def run_protocol(
    scorers: Mapping[str, Scorer],
    collection: Any,
    *,
    split: str,
    ways: int | None,
    shots: int,
    queries: int,
    tasks: int,
    seed: int,
    details: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, EvaluationResult]:
    """Score every method on the same episodes; the building block of :func:`evaluate` and :func:`compare`."""
    tune_cpu_allocator()
    ways = ways if collection.task_type == "classification" else None
    metric = "accuracy" if collection.task_type == "classification" else "mse"
    values: dict[str, list[torch.Tensor]] = {name: [] for name in scorers}
    with tqdm(total=tasks, desc=f"{split} episodes: {', '.join(scorers)}", unit="task", leave=False) as bar:
        for start, batch in iter_episodes(collection, split, ways, shots, queries, tasks, seed):
            for name, scorer in scorers.items():
                values[name].append(scorer(batch, start).detach().to("cpu", torch.float64))
            bar.update(batch.tasks)
    results = {}
    for name, parts in values.items():
        per_task = torch.cat(parts)
        mean, ci95 = mean_ci95(per_task)
        results[name] = EvaluationResult(
            method=name, metric=metric, mean=mean, ci95=ci95, per_task=per_task.tolist(), split=split,
            ways=ways, shots=shots, queries=queries, tasks=tasks, seed=seed,
            details=dict((details or {}).get(name, {})),
        )
    return results


def evaluate(
    learner: torch.nn.Module,
    collection: Any,
    split: str = "test",
    ways: int | None = 5,
    shots: int = 1,
    queries: int = 15,
    tasks: int = 600,
    seed: int = 0,
    batch_size: int = 25,
    inner_steps: int | None = None,
    device: str | torch.device = "auto",
) -> EvaluationResult:
    """Mean accuracy (MSE for regression) of ``learner`` over ``tasks`` episodes of ``split``, +- 95% CI.

    The learner is scored in eval mode (gradient learners then adapt with their ``eval_inner_steps``
    unless ``inner_steps`` is given). ``batch_size`` tasks are forwarded at a time; it never changes
    which episodes are drawn. It can change the scores of metric learners slightly, because they embed
    all forwarded tasks in one batch and conv4's BatchNorm normalises with that batch's statistics;
    gradient learners and the baselines run each task on its own.
    """
    return compare(
        learner, collection, baselines=(), split=split, ways=ways, shots=shots, queries=queries, tasks=tasks,
        seed=seed, batch_size=batch_size, inner_steps=inner_steps, device=device,
    ).results[_method_name(learner)]


def compare(
    learner: torch.nn.Module,
    collection: Any,
    baselines: tuple[Baseline, ...] | list[Baseline] = (),
    split: str = "test",
    ways: int | None = 5,
    shots: int = 1,
    queries: int = 15,
    tasks: int = 600,
    seed: int = 0,
    batch_size: int = 25,
    inner_steps: int | None = None,
    device: str | torch.device = "auto",
) -> Comparison:
    """:func:`evaluate` ``learner`` and each baseline on the same episodes.

    Baselines are fitted first (pre-training happens on the collection's ``"train"`` split only).
    """
    tune_cpu_allocator()
    device = resolve_device(device)
    ways = ways if collection.task_type == "classification" else None
    learner.to(device)
    name = _method_name(learner)
    scorers: dict[str, Scorer] = {name: learner_scorer(learner, device, batch_size, inner_steps)}
    details: dict[str, dict[str, Any]] = {name: {"hparams": learner.hparams()} if hasattr(learner, "hparams") else {}}
    for baseline in baselines:
        if baseline.name in scorers:
            raise ValueError(f"two methods are named {baseline.name!r}")
        baseline.fit(collection, ways=ways, device=device)
        scorers[baseline.name] = baseline.scorer(seed=seed, batch_size=batch_size)
        details[baseline.name] = baseline.describe()
    results = run_protocol(
        scorers, collection, split=split, ways=ways, shots=shots, queries=queries, tasks=tasks, seed=seed,
        details=details,
    )
    reference = results[name].per_task
    paired = {other: paired_difference(reference, r.per_task) for other, r in results.items() if other != name}
    return Comparison(results=results, paired=paired)


def _method_name(learner: Any) -> str:
    return str(getattr(learner, "name", type(learner).__name__))
