"""Scale-out throughput and the cost of orchestration and tracking, on the local stack.

One PostgreSQL-backed stack (:mod:`metaauto.platform.stack`: MLflow and Prefect servers, two long-lived Prefect task
workers -- or, with ``--dispatch deployment``, two process workers on the work pool) comes up on fresh
databases; then the *same* search runs three ways:

* ``direct``: :func:`metaauto.search.run_search` in this process against the same PostgreSQL study storage,
  no Prefect, no MLflow (``track=False``) -- the library alone;
* ``stack-1``: the ``search-learners`` flow with ``workers=1``: one ``search-worker`` run on one worker,
  every trial a Prefect task run and a nested MLflow run on the MLflow server, plots and leaderboard
  logged at the end;
* ``stack-2``: the same with ``workers=2``.

The search is identical in the direct and 1-worker runs: the published defaults are queued first, the
TPE sampler has the same seed (a worker run is seeded ``seed + index``), training is deterministic, so
the same configurations are trained in the same order; the time the two take apart is what Prefect and
MLflow add. It is split into a fixed part (scheduling, the parent run, plots) and a per-trial part (task
runs, MLflow runs and metrics), from the trials' own start and end times in the study.

This machine's speed drifts by 10-20% from one minute to the next (a shared VM: steal time), more than
the effect measured. So the arms run interleaved (direct, stack-1, stack-2, direct, ...) ``--repeats``
times and the medians are compared; one untimed search through the stack comes first, so that the
processes' one-time costs (connections, lazy imports) are not charged to the first timed search.

Trials/hour with 1 and 2 workers give the scaling efficiency ``tph(2) / (2 * tph(1))``; on a machine with
fewer free cores than workers it measures the machine, not the stack -- the JSON records the core count
and the load average.

Usage::

    python benchmarks/scaleout.py                       # about 12 minutes on 2 cores
    python benchmarks/scaleout.py --trials 4 --max-steps 50 --repeats 1   # smoke run
    python benchmarks/scaleout.py --dispatch deployment  # trials in flow runs on the work pool instead
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
ALGORITHMS = ["fomaml", "reptile", "anil", "metasgd"]


def _trial_stats(study: Any) -> dict[str, Any]:
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    starts = [t.datetime_start for t in trials]
    ends = [t.datetime_complete for t in trials]
    return {
        "finished": len(trials),
        "states": {s: sum(t.state.name == s for t in trials) for s in {t.state.name for t in trials}},
        "trial_seconds": sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials),
        "first_start": min(starts).timestamp() if starts else None,
        "last_end": max(ends).timestamp() if ends else None,
        "params": [dict(t.params) for t in sorted(trials, key=lambda t: t.number)],
        "durations": [round((t.datetime_complete - t.datetime_start).total_seconds(), 3) for t in sorted(trials, key=lambda t: t.number)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=300, help="meta-updates per trial (sinusoid, MLP)")
    parser.add_argument("--postgres", default=os.environ.get("METAAUTO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], choices=[1, 2],
                        help="stack runs to time (1 is needed for the overhead, 1 and 2 for the efficiency)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of every arm (medians are reported)")
    parser.add_argument("--dispatch", choices=["task-workers", "deployment"], default="task-workers",
                        help="what runs the trials: the stack's long-lived task workers, or flow runs on the work pool")
    parser.add_argument("--out", type=Path, default=RESULTS / "scaleout-cpu.json")
    args = parser.parse_args(argv)

    os.environ.setdefault("METAAUTO_HOME", tempfile.mkdtemp(prefix="metaauto-scaleout-"))
    os.environ.pop("METAAUTO_SEARCH_STORAGE", None)
    os.environ["OMP_NUM_THREADS"] = "1"  # one core per trial process, in every path
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.params import CollectionParams, SearchParams
    from flows.search import search_learners
    from metaauto.platform import stack
    from metaauto.search import Budget, open_storage, run_search
    from metaauto.platform.servers import free_port
    from metaauto.tasks import load_collection

    prefix = f"metaauto_scaleout_{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    deployment = args.dispatch == "deployment"
    state = stack.up(workers=0 if deployment else 2, pool_workers=2 if deployment else 0, postgres=args.postgres, prefix=prefix, prefect_port=free_port(),
                     mlflow_port=free_port())
    up_seconds = time.perf_counter() - t0
    print(f"stack up in {up_seconds:.1f}s: Prefect {state.prefect.url}, MLflow {state.mlflow_url}, "
          f"2 {'process' if deployment else 'task'} workers", flush=True)
    storage_url = state.settings.optuna_db
    storage = open_storage(storage_url)
    val_every = max(1, args.max_steps // 2)
    runs: dict[str, list[dict[str, Any]]] = {"direct": [], **{f"stack-{w}": [] for w in args.workers}}

    def direct() -> None:  # the library alone, same storage
        name = f"direct-{uuid.uuid4().hex[:6]}"
        load = os.getloadavg()[0]
        t = time.perf_counter()
        run_search(load_collection("sinusoid"), shots=5, queries=5, trials=args.trials, algorithms=ALGORITHMS,
                   budget=Budget(max_steps=args.max_steps, val_every=val_every, val_tasks=20), pruner="none",
                   storage=storage_url, study_name=name, track=False, warm_start=False, seed=0, device="cpu")
        wall = time.perf_counter() - t
        runs["direct"].append({"wall_seconds": wall, "loadavg_before": load,
                               **_trial_stats(optuna.load_study(study_name=name, storage=storage))})
        print(f"direct: {wall:.1f}s", flush=True)

    def through_stack(workers: int) -> None:
        name = f"stack{workers}-{uuid.uuid4().hex[:6]}"
        data = CollectionParams(collection="sinusoid", shots=5, queries=5)
        search = SearchParams(trials=args.trials, algorithms=ALGORITHMS, max_steps=args.max_steps, val_every=val_every,
                              val_tasks=20, pruner="none", storage=storage_url, study_name=name, device="cpu",
                              workers=workers, dispatch=args.dispatch, seed=0, warm_start=False)
        load = os.getloadavg()[0]
        t = time.perf_counter()
        start_wall = time.time()
        search_learners(data=data, search=search, experiment="scaleout-benchmark")
        wall = time.perf_counter() - t
        stats = _trial_stats(optuna.load_study(study_name=name, storage=storage))
        stats["to_first_trial_seconds"] = stats["first_start"] - start_wall if stats["first_start"] else None
        runs[f"stack-{workers}"].append({"wall_seconds": wall, "loadavg_before": load, **stats})
        print(f"stack, {workers} worker(s): {wall:.1f}s", flush=True)

    try:
        os.environ["MLFLOW_TRACKING_URI"] = state.mlflow_url
        with temporary_settings(updates={PREFECT_API_URL: state.prefect_api}):
            # one untimed search through the stack first: the workers' and this process's first-use costs
            # (connections, lazy imports) are paid once per process, not per search
            through_stack(1)
            runs["stack-1"].clear()
            for _ in range(args.repeats):  # interleaved, so that drift in the machine's speed hits every arm alike
                direct()
                for workers in args.workers:
                    through_stack(workers)
    finally:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
        stack.down(drop=True)

    def median(key: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    walls = {k: median(k, "wall_seconds") for k in runs}
    tph = {k: 3600.0 * runs[k][0]["finished"] / walls[k] for k in runs}
    result = {
        "benchmark": "scaleout", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/scaleout.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "loadavg_end": os.getloadavg()},
        "search": {"collection": "sinusoid", "shots": 5, "algorithms": ALGORITHMS, "trials": args.trials,
                   "max_steps": args.max_steps, "pruner": "none", "storage": "PostgreSQL (the stack's optuna database)",
                   "dispatch": args.dispatch, "repeats": args.repeats},
        "stack_up_seconds": up_seconds,
        "runs": runs,
        "median_wall_seconds": walls,
        "trials_per_hour": tph,
    }
    one, two = ("stack-1" in runs), ("stack-2" in runs)
    if one and two:
        result["efficiency_2_workers"] = tph["stack-2"] / (2 * tph["stack-1"])
        result["speedup_2_workers"] = tph["stack-2"] / tph["stack-1"]
    overhead = None
    if one:
        overhead = walls["stack-1"] / walls["direct"] - 1
        paired = [s["wall_seconds"] / d["wall_seconds"] - 1 for d, s in zip(runs["direct"], runs["stack-1"])]
        per_trial = median("stack-1", "trial_seconds") / median("direct", "trial_seconds") - 1
        fixed = statistics.median(s["wall_seconds"] - s["trial_seconds"] for s in runs["stack-1"]) \
            - statistics.median(d["wall_seconds"] - d["trial_seconds"] for d in runs["direct"])
        result["same_configurations_direct_vs_1_worker"] = all(d["params"] == s["params"] for d, s in zip(runs["direct"], runs["stack-1"]))
        result["overhead"] = {"total_fraction": overhead, "paired_fractions": paired, "per_trial_fraction": per_trial,
                              "fixed_seconds": fixed, "goal_fraction": 0.05, "met": overhead < 0.05}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    print(f"\n{'run':<10} {'median wall s':>14} {'walls s':>24} {'trials':>6} {'trials/h':>9}")
    for key, rs in runs.items():
        each = " ".join(f"{r['wall_seconds']:.1f}" for r in rs)
        print(f"{key:<10} {walls[key]:>14.1f} {each:>24} {rs[0]['finished']:>6} {tph[key]:>9.0f}")
    if "speedup_2_workers" in result:
        print(f"\n2 workers: speed-up {result['speedup_2_workers']:.2f}x, efficiency {result['efficiency_2_workers']:.0%} "
              f"({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    if overhead is not None:
        print(f"orchestration + tracking overhead (1 worker vs direct, medians): {overhead:+.1%} of the wall time "
              f"(paired {', '.join(f'{x:+.1%}' for x in paired)}; per trial {per_trial:+.1%}, fixed {fixed:.1f}s); "
              f"goal < 5%: {'met' if overhead < 0.05 else 'NOT met'}")
        print(f"same configurations in every run: {result['same_configurations_direct_vs_1_worker']}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
