"""Scale-out throughput and the cost of orchestration and tracking, on the local stack.

One PostgreSQL-backed stack (:mod:`metaauto.stack`: MLflow and Prefect servers, a process work pool, two
Prefect workers) comes up on fresh databases; then the *same* search runs three ways:

* ``direct``: :func:`metaauto.search.run_search` in this process against the same PostgreSQL study storage,
  no Prefect, no MLflow (``track=False``) -- the library alone;
* ``stack-1``: the ``search-learners`` flow with ``workers=1``: one ``search-worker`` flow run on one Prefect
  worker, every trial a Prefect task run and a nested MLflow run on the MLflow server, plots and leaderboard
  logged at the end;
* ``stack-2``: the same with ``workers=2``.

The search is identical in the direct and 1-worker runs: the published defaults are queued first, the
TPE sampler has the same seed (a worker run is seeded ``seed + index``), training is deterministic, so
the same configurations are trained in the same order; the time the two take apart is what Prefect and
MLflow add. It is split into a fixed part (flow-run scheduling, the worker's subprocess start-up, the
parent run, plots) and a per-trial part (task runs, MLflow runs and metrics), from the trials' own
start and end times in the study.

Trials/hour with 1 and 2 workers give the scaling efficiency ``tph(2) / (2 * tph(1))``; on a machine with
fewer free cores than workers it measures the machine, not the stack -- the JSON records the core count
and the load average.

Usage::

    python benchmarks/scaleout.py                       # about 9 minutes on 2 cores
    python benchmarks/scaleout.py --trials 4 --max-steps 50   # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
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
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=500, help="meta-updates per trial (sinusoid, MLP)")
    parser.add_argument("--postgres", default=os.environ.get("METAAUTO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], choices=[1, 2],
                        help="stack runs to time (1 is needed for the overhead, 1 and 2 for the efficiency)")
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
    from metaauto import stack
    from metaauto.search import Budget, open_storage, run_search
    from metaauto.servers import free_port
    from metaauto.tasks import load_collection

    prefix = f"metaauto_scaleout_{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    state = stack.up(workers=2, postgres=args.postgres, prefix=prefix, prefect_port=free_port(), mlflow_port=free_port())
    up_seconds = time.perf_counter() - t0
    print(f"stack up in {up_seconds:.1f}s: Prefect {state.prefect['url']}, MLflow {state.mlflow_url}, 2 workers", flush=True)
    storage_url = state.settings["optuna_db"]
    storage = open_storage(storage_url)
    val_every = max(1, args.max_steps // 2)
    runs: dict[str, dict[str, Any]] = {}
    try:
        # direct: the library alone, same storage
        name = f"direct-{uuid.uuid4().hex[:6]}"
        load = os.getloadavg()[0]
        t = time.perf_counter()
        run_search(load_collection("sinusoid"), shots=5, queries=5, trials=args.trials, algorithms=ALGORITHMS,
                   budget=Budget(max_steps=args.max_steps, val_every=val_every, val_tasks=20), pruner="none",
                   storage=storage_url, study_name=name, track=False, warm_start=False, seed=0, device="cpu")
        wall = time.perf_counter() - t
        runs["direct"] = {"wall_seconds": wall, "loadavg_before": load, **_trial_stats(optuna.load_study(study_name=name, storage=storage))}
        print(f"direct: {wall:.1f}s", flush=True)

        os.environ["MLFLOW_TRACKING_URI"] = state.mlflow_url
        with temporary_settings(updates={PREFECT_API_URL: state.prefect_api}):
            for workers in args.workers:
                name = f"stack{workers}-{uuid.uuid4().hex[:6]}"
                data = CollectionParams(collection="sinusoid", shots=5, queries=5)
                search = SearchParams(trials=args.trials, algorithms=ALGORITHMS, max_steps=args.max_steps, val_every=val_every,
                                      val_tasks=20, pruner="none", storage=storage_url, study_name=name, device="cpu",
                                      workers=workers, seed=0, warm_start=False)
                load = os.getloadavg()[0]
                t = time.perf_counter()
                start_wall = time.time()
                search_learners(data=data, search=search, experiment="scaleout-benchmark")
                wall = time.perf_counter() - t
                stats = _trial_stats(optuna.load_study(study_name=name, storage=storage))
                stats["to_first_trial_seconds"] = stats["first_start"] - start_wall if stats["first_start"] else None
                runs[f"stack-{workers}"] = {"wall_seconds": wall, "loadavg_before": load, **stats}
                print(f"stack, {workers} worker(s): {wall:.1f}s", flush=True)
    finally:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
        stack.down(drop=True)

    direct, one, two = runs["direct"], runs.get("stack-1"), runs.get("stack-2")
    tph = {k: 3600.0 * r["finished"] / r["wall_seconds"] for k, r in runs.items()}
    result = {
        "benchmark": "scaleout", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/scaleout.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "loadavg_end": os.getloadavg()},
        "search": {"collection": "sinusoid", "shots": 5, "algorithms": ALGORITHMS, "trials": args.trials,
                   "max_steps": args.max_steps, "pruner": "none", "storage": "PostgreSQL (the stack's optuna database)"},
        "stack_up_seconds": up_seconds,
        "runs": runs,
        "trials_per_hour": tph,
    }
    if one and two:
        result["efficiency_2_workers"] = tph["stack-2"] / (2 * tph["stack-1"])
        result["speedup_2_workers"] = tph["stack-2"] / tph["stack-1"]
    overhead = None
    if one:
        overhead = (one["wall_seconds"] - direct["wall_seconds"]) / direct["wall_seconds"]
        per_trial = (one["trial_seconds"] - direct["trial_seconds"]) / direct["trial_seconds"]
        fixed = (one["wall_seconds"] - one["trial_seconds"]) - (direct["wall_seconds"] - direct["trial_seconds"])
        result["same_configurations_direct_vs_1_worker"] = direct["params"] == one["params"]
        result["overhead"] = {"total_fraction": overhead, "per_trial_fraction": per_trial, "fixed_seconds": fixed,
                              "goal_fraction": 0.05, "met": overhead < 0.05}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    print(f"\n{'run':<10} {'wall s':>8} {'trial s':>8} {'trials':>6} {'trials/h':>9}")
    for key, r in runs.items():
        print(f"{key:<10} {r['wall_seconds']:>8.1f} {r['trial_seconds']:>8.1f} {r['finished']:>6} {tph[key]:>9.0f}")
    if "speedup_2_workers" in result:
        print(f"\n2 workers: speed-up {result['speedup_2_workers']:.2f}x, efficiency {result['efficiency_2_workers']:.0%} "
              f"({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    if overhead is not None:
        print(f"orchestration + tracking overhead (1 worker vs direct): {overhead:+.1%} of the wall time "
              f"(per trial {per_trial:+.1%}, fixed {fixed:.1f}s); goal < 5%: {'met' if overhead < 0.05 else 'NOT met'}")
        print(f"same configurations in both runs: {result['same_configurations_direct_vs_1_worker']}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
