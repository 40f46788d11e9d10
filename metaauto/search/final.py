"""The end of a search: the best configuration meta-trained again, meta-tested, registered and promoted.

Training is deterministic given the seed, so with the trial budget this reproduces the best trial's own
weights when that trial ran its full budget; a longer final training (``steps``) validates about 20 times
rather than every trial-sized interval, and ``seconds`` caps its wall-clock time. The run is
:func:`metaauto.tracking.train_tracked`'s -- meta-test on the test split with the baselines on the same
episodes, registration as ``register_as`` and promotion by the registry's paired test -- nested under the
study's parent run like the trials.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from metaauto.engine import TimeBudget
from metaauto.search.objective import Budget, build, train_config
from metaauto.search.problem import SearchProblem
from metaauto.search.tracking import PARENT_TAG
from metaauto.tracking.run import TrackedRun
from metaauto.tracking.training import EvalSettings, TrackedTraining, train_tracked


@dataclass(frozen=True)
class FinalSettings:
    """How the best configuration is trained, evaluated, registered and promoted at the end of a search."""

    #: meta-updates of the final training; ``None``: the trial budget's
    steps: int | None = None
    #: wall-clock cap of the final training in seconds; ``None``: none
    seconds: float | None = None
    #: the meta-test; ``None``: :class:`~metaauto.tracking.EvalSettings` seeded like the search
    evaluation: EvalSettings | None = None
    #: registered model name; ``None``: not registered
    register_as: str | None = None
    #: the promotion test against the champion (:func:`metaauto.tracking.promotion.promote`)
    margin: float = 0.0
    alpha: float = 0.05
    test: str = "wilcoxon"

    def budget(self, trial_budget: Budget) -> Budget:
        if self.steps is None:
            return trial_budget
        return dataclasses.replace(trial_budget, max_steps=self.steps, val_every=max(trial_budget.val_every, self.steps // 20))


def train_best(problem: SearchProblem, best: Any, parent: TrackedRun, final: FinalSettings, experiment: str) -> TrackedTraining:
    """Train ``best`` (a finished trial of ``problem``'s study) as ``final`` says, nested under ``parent``,
    and tag the parent with the run."""
    candidate = problem.space.candidate(best.params)
    learner = build(candidate, problem.collection, problem.episodes)
    config = train_config(candidate, problem.collection, problem.episodes, final.budget(problem.budget))
    name = problem.study_name
    tracked = train_tracked(
        learner, problem.collection, config, evaluation=final.evaluation or EvalSettings(seed=problem.episodes.seed),
        register_as=final.register_as, margin=final.margin, alpha=final.alpha, test=final.test, experiment=experiment,
        client=parent.client, name=f"{name}-best-trial{best.number}-{candidate.algorithm}",
        tags={PARENT_TAG: parent.run_id, "optuna.study": name, "optuna.trial": best.number, "optuna.best": "true"},
        callbacks=[TimeBudget(final.seconds)] if final.seconds is not None else [],
    )
    parent.set_tags({"best_run_id": tracked.run_id})
    return tracked
