"""Does the search pay off? Omniglot 5-way 1-shot: search champion vs published defaults vs random search.

Every arm gets the same wall-clock budget ``--budget-s`` (default 20 min) of *training*:

* ``default/<algorithm>``: the algorithm's published configuration
  (:meth:`metaauto.search.SearchSpace.defaults`) meta-trained for ``--budget-s`` seconds.
* ``search``: :func:`metaauto.search.run_search` (TPE sampler, Hyperband pruner, published defaults
  enqueued first) explores for ``--budget-s`` seconds with per-trial budgets ``--trial-steps`` /
  ``--trial-seconds``; its best configuration (the champion) is then meta-trained from scratch for
  ``--budget-s`` seconds, exactly like a default.
* ``random``: the same objective under Optuna's ``RandomSampler`` with no pruner and no enqueued
  defaults, for ``--budget-s`` seconds; its best configuration is then trained like the champion.

So the search arms cost ``2 x --budget-s`` in all (exploring, then training the winner once); the JSON
records both times. The question the benchmark answers is the user's: "given the same training budget
for the final model, is the configuration the search picked better than the one I would have copied
from the paper, and better than what random search would have picked?" Training keeps the best
validated weights (:func:`metaauto.engine.meta_train`); every arm is scored on the same ``--eval-tasks``
meta-test episodes (alphabets of ``images_evaluation``) with a 95% CI by :func:`metaauto.evaluation.evaluate`.

Usage::

    python benchmarks/search.py --data-dir /work/shared/data                          # the real run (20 min budget)
    python benchmarks/search.py --budget-s 60 --eval-tasks 50 --algorithms protonet maml \\
        --json /tmp/search-smoke.json                                                # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and an uninstalled `metaauto` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna
import torch

from benchmarks.throughput import machine_info
from metaauto.engine import Callback, RunState, meta_train, resolve_device
from metaauto.engine.history import StepRecord
from metaauto.evaluation import evaluate
from metaauto.learners import available_learners
from metaauto.search import Budget, EpisodeSettings, Objective, SearchSpace, run_search
from metaauto.search.objective import build, train_config
from metaauto.tasks import load_collection

RESULTS = Path(__file__).resolve().parent / "results" / "search-cpu.json"
WAYS, SHOTS, QUERIES = 5, 1, 15


class WallClock(Callback):
    """Stops training after the first meta-update that ends past ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def on_train_start(self, run: RunState) -> None:
        self.started = time.monotonic()

    def on_step(self, run: RunState, record: StepRecord) -> None:
        if time.monotonic() - self.started >= self.seconds:
            run.request_stop("time_budget")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def train_and_test(params: dict[str, Any], space: SearchSpace, collection: Any, episodes: EpisodeSettings,
                   args: argparse.Namespace) -> dict[str, Any]:
    """Meta-train ``params`` for ``--budget-s`` seconds, then score it on the meta-test episodes."""
    candidate = space.candidate(params)
    learner = build(candidate, collection, episodes)
    budget = Budget(max_steps=args.max_steps, seconds=args.budget_s, val_every=args.val_every, val_tasks=args.val_tasks)
    started = time.perf_counter()
    result = meta_train(learner, collection, train_config(candidate, collection, episodes, budget),
                        callbacks=[WallClock(args.budget_s)])
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    scored = evaluate(learner, collection, "test", ways=WAYS, shots=SHOTS, queries=QUERIES, tasks=args.eval_tasks,
                      seed=args.seed, device=episodes.device)
    return {
        "params": params, "accuracy": scored.mean, "ci95": scored.ci95, "eval_tasks": scored.tasks,
        "train_seconds": round(train_s, 1), "eval_seconds": round(time.perf_counter() - started, 1),
        "meta_steps": result.final_step, "best_val_accuracy": result.best_value, "stop_reason": result.stop_reason,
    }


def study_summary(study: optuna.Study, seconds: float) -> dict[str, Any]:
    states: dict[str, int] = {}
    for t in study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    if not states.get("COMPLETE"):
        raise SystemExit(f"no trial completed within the budget ({states}); raise --budget-s or lower --trial-steps")
    return {"search_seconds": round(seconds, 1), "trials": states, "best_trial": study.best_trial.number,
            "best_val_accuracy": study.best_value}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("METAAUTO_DATA_DIR"), help="holds omniglot/ (default $METAAUTO_DATA_DIR)")
    parser.add_argument("--budget-s", type=float, default=1200.0, help="wall-clock training budget of every arm (default 1200)")
    parser.add_argument("--algorithms", nargs="+", default=None, metavar="NAME", help="learners searched and compared (default all)")
    parser.add_argument("--arms", nargs="+", default=["defaults", "search", "random"], choices=["defaults", "search", "random"])
    parser.add_argument("--trial-steps", type=int, default=600, help="meta-updates per search trial at most (default 600)")
    parser.add_argument("--trial-seconds", type=float, default=None, help="seconds per search trial (default budget/8)")
    parser.add_argument("--val-every", type=int, default=100, help="meta-updates between validations (default 100)")
    parser.add_argument("--val-tasks", type=int, default=50, help="meta-val episodes per validation (default 50)")
    parser.add_argument("--max-steps", type=int, default=1_000_000, help="meta-update cap of final training (default: budget only)")
    parser.add_argument("--eval-tasks", type=int, default=600, help="meta-test episodes per arm (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.trial_seconds is None:
        args.trial_seconds = args.budget_s / 8
    args.val_every = min(args.val_every, args.trial_steps)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    collection = load_collection("omniglot", data_dir=args.data_dir, image_size=28)
    device = str(resolve_device(args.device))
    episodes = EpisodeSettings(ways=WAYS, shots=SHOTS, queries=QUERIES, backbone="conv4", seed=args.seed, device=device)
    algorithms = args.algorithms or available_learners(collection.task_type)
    space = SearchSpace(collection.task_type, "conv4", algorithms)
    trial_budget = Budget(max_steps=args.trial_steps, seconds=args.trial_seconds, val_every=args.val_every, val_tasks=args.val_tasks)
    report: dict[str, Any] = {
        "benchmark": "search", "collection": "omniglot", "setting": f"{WAYS}w{SHOTS}s", "queries": QUERIES,
        "budget_s": args.budget_s, "trial_budget": {"steps": args.trial_steps, "seconds": args.trial_seconds},
        "algorithms": algorithms, "eval_tasks": args.eval_tasks, "seed": args.seed,
        "command": " ".join([sys.executable, *sys.argv]), "machine": machine_info(device),
        "torch_threads": torch.get_num_threads(), "arms": {},
    }

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))

    with tempfile.TemporaryDirectory() as tmp:
        if "search" in args.arms:
            log(f"search: TPE + Hyperband for {args.budget_s:.0f} s over {', '.join(algorithms)}")
            started = time.perf_counter()
            found = run_search(collection, ways=WAYS, shots=SHOTS, queries=QUERIES, trials=100_000, timeout=args.budget_s,
                               algorithms=algorithms, budget=trial_budget, pruner="hyperband", storage=f"sqlite:///{tmp}/optuna.db",
                               study_name="search", seed=args.seed, device=device, track=False, warm_start=False,
                               knowledge=f"{tmp}/knowledge.db")
            study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp}/optuna.db")
            summary = study_summary(study, time.perf_counter() - started)
            log(f"search: {summary['trials']}; champion {found.best_params}")
            report["arms"]["search"] = {**summary, **train_and_test(found.best_params, space, collection, episodes, args)}
            save()
        if "random" in args.arms:
            log(f"random: RandomSampler, no pruning, for {args.budget_s:.0f} s")
            study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=args.seed),
                                        pruner=optuna.pruners.NopPruner())
            started = time.perf_counter()
            study.optimize(Objective(space, collection, episodes, trial_budget), timeout=args.budget_s, catch=(Exception,))
            summary = study_summary(study, time.perf_counter() - started)
            log(f"random: {summary['trials']}; best {study.best_params}")
            report["arms"]["random"] = {**summary, **train_and_test(dict(study.best_params), space, collection, episodes, args)}
            save()
        if "defaults" in args.arms:
            for algorithm in algorithms:
                log(f"default/{algorithm}: published configuration for {args.budget_s:.0f} s")
                report["arms"][f"default/{algorithm}"] = train_and_test(space.defaults(algorithm), space, collection, episodes, args)
                save()

    arms = report["arms"]
    if "search" in arms:
        others = {k: v for k, v in arms.items() if k != "search"}
        report["champion_beats"] = {k: arms["search"]["accuracy"] > v["accuracy"] for k, v in others.items()}
    save()
    print(f"Omniglot {WAYS}-way {SHOTS}-shot, {args.budget_s:.0f} s training budget per arm, {args.eval_tasks} meta-test tasks")
    for name, arm in sorted(arms.items(), key=lambda kv: -kv[1]["accuracy"]):
        print(f"  {name:<20} {100 * arm['accuracy']:6.2f}% +- {100 * arm['ci95']:.2f}%  ({arm['meta_steps']} steps, "
              f"{arm['params']['algorithm']})")
    print(f"written to {args.json}")
    return report


if __name__ == "__main__":
    main()
