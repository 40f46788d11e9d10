"""Meta-training throughput and peak memory: metaauto's learners against per-task clone-and-loop code.

For every learner, metaauto's implementation (tasks under ``torch.func.vmap``, or one batched forward
for metric learners) and the loop of :mod:`benchmarks.reference_loop` (what learn2learn, torchmeta and
higher do) run the forward and backward of one meta-step on the *same* module, weights and tensors:
Conv4 on Omniglot-shaped 5-way 1-shot episodes with 15 queries per class, meta-batch 32. The
optimiser step is left out of both, since it is identical and independent of how the tasks ran.

Before anything is timed, the two implementations must agree: the float32 meta-loss of the timed batch,
and in float64 (on the first tasks of the batch) the loss *and every gradient*. A disagreement is
printed in red, recorded in the JSON, and makes the command exit with status 1 -- a speed-up between
two different computations is not a speed-up.

Episodes are real Omniglot (meta-train split, ``seed``) when ``--data-dir`` is given, else uniform
random images with the same shapes and label layout; the throughput of both implementations does not
depend on pixel values, so random tensors are fine for timing, and ``--data-dir`` makes the run use the
data a user would train on.

Peak memory. On CPU, each (learner, implementation) runs one meta-step in a fresh subprocess, which
reports its peak resident set growth over the step (``VmHWM`` after the step, reset with
``/proc/self/clear_refs`` just before it, minus ``VmRSS`` before it; ``ru_maxrss`` where that reset is
unavailable). glibc is told to serve blocks from 128 KiB upwards with ``mmap`` so freed memory leaves
the resident set instead of hiding in malloc's free lists. On CUDA it is
``torch.cuda.max_memory_allocated()`` over the step, minus what was allocated before it.

Usage::

    python benchmarks/throughput.py --data-dir ../shared/data          # all learners, a few minutes
    python benchmarks/throughput.py --quick --learners maml protonet   # harness smoke run
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make `benchmarks` and an uninstalled `metaauto` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.reference_loop import reference_step
from metaauto.backbones import make_backbone
from metaauto.learners import LEARNERS, make_learner
from metaauto.runtime import tune_cpu_allocator
from metaauto.tasks import TaskBatch, load_collection

RESULTS_DIR = Path(__file__).resolve().parent / "results"
INPUT_SHAPE = (1, 28, 28)
#: speed-up goals of the issue: (second-order, first-order, metric) on CPU; second-order MAML on a GPU
CPU_GOALS = {"second_order": 1.3, "first_order": 1.1, "metric": 2.0}
CUDA_MAML_GOAL = 5.0
#: relative tolerance of the float32 loss check, and of the float64 loss/gradient check
LOSS_RTOL_32 = 1e-4
RTOL_64 = 1e-7
#: tasks of the float64 check (a prefix of the timed batch)
CHECK_TASKS = 4


# ------------------------------------------------------------------------------------------- setup


def random_batch(tasks: int, ways: int, shots: int, queries: int, seed: int) -> TaskBatch:
    """Omniglot-shaped episodes of uniform noise, labels laid out as metaauto's collections lay them out."""
    generator = torch.Generator().manual_seed(seed)
    labels = lambda per_class: torch.arange(ways).repeat_interleave(per_class).repeat(tasks, 1)  # noqa: E731
    return TaskBatch(
        support_x=torch.rand(tasks, ways * shots, *INPUT_SHAPE, generator=generator),
        support_y=labels(shots),
        query_x=torch.rand(tasks, ways * queries, *INPUT_SHAPE, generator=generator),
        query_y=labels(queries),
        task_type="classification",
        ways=ways,
        shots=shots,
    )


def episode_batch(args: argparse.Namespace) -> TaskBatch:
    if args.data_dir is None:
        return random_batch(args.meta_batch, args.ways, args.shots, args.queries, args.seed)
    collection = load_collection("omniglot", data_dir=args.data_dir)
    return collection.sample(
        split="train", ways=args.ways, shots=args.shots, queries=args.queries, tasks=args.meta_batch, seed=args.seed
    )


def build_learner(name: str, ways: int, seed: int) -> torch.nn.Module:
    """Conv4 (with a ``ways``-wide head for gradient learners) wrapped in learner ``name``'s defaults."""
    torch.manual_seed(seed)
    gradient = LEARNERS[name].family == "gradient"
    model = make_backbone("conv4", input_shape=INPUT_SHAPE, out_features=ways if gradient else None)
    return make_learner(name, model)


def speedup_goal(learner: torch.nn.Module, device: str) -> float:
    if learner.family == "metric":
        return CPU_GOALS["metric"]
    options = {**learner.hparams(), **getattr(learner, "pinned", {})}
    first_order = options.get("first_order", False) or options.get("outer") == "reptile"
    if device == "cuda" and learner.name == "maml" and not first_order:
        return CUDA_MAML_GOAL
    return CPU_GOALS["first_order" if first_order else "second_order"]


def step_functions(learner: torch.nn.Module, batch: TaskBatch) -> dict[str, Callable[[], float]]:
    """One meta-step's forward + backward per implementation; gradients start from ``None`` each time."""
    loop = reference_step(learner)

    def metaauto() -> float:
        learner.zero_grad(set_to_none=True)
        loss = learner.meta_loss(batch)
        loss.backward()
        return loss.item()

    def reference() -> float:
        learner.zero_grad(set_to_none=True)
        return loop(learner, batch)

    return {"metaauto": metaauto, "loop": reference}


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# -------------------------------------------------------------------------------------- equivalence


def gradients(learner: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for n, p in learner.named_parameters()}


def compare(learner: torch.nn.Module, batch: TaskBatch) -> dict[str, Any]:
    """Loss and gradients of both implementations on ``batch``; errors relative to the metaauto values."""
    steps = step_functions(learner, batch)
    loss_a = steps["metaauto"]()
    grads_a = gradients(learner)
    loss_b = steps["loop"]()
    grads_b = gradients(learner)
    learner.zero_grad(set_to_none=True)
    scale = max(g.abs().max().item() for g in grads_a.values()) or 1.0
    worst = max(grads_a, key=lambda n: (grads_a[n] - grads_b[n]).abs().max().item())
    return {
        "loss_metaauto": loss_a,
        "loss_loop": loss_b,
        "loss_rel_error": abs(loss_a - loss_b) / max(abs(loss_a), 1e-12),
        "grad_rel_error": (grads_a[worst] - grads_b[worst]).abs().max().item() / scale,
        "grad_worst_parameter": worst,
    }


def check_equivalence(learner: torch.nn.Module, batch: TaskBatch) -> dict[str, Any]:
    """Float64 comparison on the first tasks: loose float32 noise cannot hide a real difference there."""
    twin = copy.deepcopy(learner).to("cpu", torch.float64)
    sub = batch[: min(CHECK_TASKS, batch.tasks)].to("cpu")
    sub = TaskBatch(
        sub.support_x.double(), sub.support_y, sub.query_x.double(), sub.query_y, sub.task_type, sub.ways, sub.shots
    )
    result = compare(twin, sub)
    result["tasks"] = sub.tasks
    result["ok"] = result["loss_rel_error"] <= RTOL_64 and result["grad_rel_error"] <= RTOL_64
    return result


# ------------------------------------------------------------------------------------------ timing


def time_steps(
    steps: dict[str, Callable[[], float]], warmup: int, repeats: int, device: str
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Wall-clock seconds per meta-step; the implementations alternate so that drift hits both alike.

    The first call of each implementation also yields its float32 loss (for the equivalence check).
    """
    first_loss = {name: step() for name, step in steps.items()}
    for _ in range(max(warmup - 1, 0)):
        for step in steps.values():
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds, first_loss


# ------------------------------------------------------------------------------------------ memory


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M).group(1))


def measure_step_memory(step: Callable[[], float], device: str) -> dict[str, Any]:
    """Peak memory growth (MiB) of one call of ``step`` in this process."""
    gc.collect()
    if device == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        synchronize(device)
        return {"peak_mib": (torch.cuda.max_memory_allocated() - before) / 2**20, "method": "cuda.max_memory_allocated"}
    before = _proc_status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        method = "VmHWM after clear_refs"
    except OSError:
        import resource

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss delta"
    step()
    if method == "ru_maxrss delta":
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    else:
        peak = _proc_status_kib("VmHWM")
    return {"peak_mib": (peak - before) / 1024, "method": method}


def memory_worker(payload_path: str) -> None:
    """Subprocess entry: rebuild the learner and batch the parent saved, and measure one meta-step."""
    payload = torch.load(payload_path, weights_only=False)
    learner = build_learner(payload["learner"], payload["ways"], payload["seed"])
    learner.load_state_dict(payload["state"])
    batch = payload["batch"]
    step = step_functions(learner, batch)[payload["impl"]]
    print(json.dumps(measure_step_memory(step, "cpu")))


def measure_memory_subprocess(learner: torch.nn.Module, batch: TaskBatch, ways: int, seed: int) -> dict[str, Any]:
    """Peak RSS growth of one meta-step of each implementation, each in a fresh interpreter."""
    results: dict[str, Any] = {}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    with tempfile.TemporaryDirectory(prefix="metaauto-bench-") as tmp:
        for impl in ("metaauto", "loop"):
            path = Path(tmp) / f"{impl}.pt"
            torch.save(
                {"learner": learner.name, "ways": ways, "seed": seed, "state": learner.state_dict(), "batch": batch, "impl": impl},
                path,
            )
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--memory-worker", str(path)],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"memory worker for {learner.name}/{impl} failed:\n{proc.stderr[-2000:]}")
            results[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


# ------------------------------------------------------------------------------------------ report


def machine_info(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            match = re.search(r"^model name\s*:\s*(.+)$", info.read(), re.M)
            cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = meta["settings"]
    table = Table(
        title=(
            f"meta-step throughput, {s['ways']}-way {s['shots']}-shot, {s['queries']} queries/class, "
            f"meta-batch {s['meta_batch']}, {meta['device']} ({meta['machine']['torch_threads']} threads), "
            f"{'Omniglot' if s['data'] == 'omniglot' else 'random'} episodes"
        )
    )
    for column in ("learner", "execution", "metaauto tasks/s", "loop tasks/s", "speed-up", "goal", "metaauto MiB", "loop MiB", "same result"):
        table.add_column(column, justify="left" if column in ("learner", "execution") else "right")
    for r in rows:
        mem = r.get("peak_memory_mib") or {}
        speedup = r["speedup"]
        met = speedup >= r["goal"]
        check_text = "[green]yes[/]" if r["equivalence"]["ok"] else "[bold red]NO[/]"
        table.add_row(
            r["learner"],
            r["execution"],
            f"{r['metaauto']['tasks_per_s']:.2f}",
            f"{r['loop']['tasks_per_s']:.2f}",
            f"[{'green' if met else 'red'}]{speedup:.2f}x[/]",
            f">= {r['goal']:.1f}x",
            f"{mem['metaauto']:.0f}" if "metaauto" in mem else "-",
            f"{mem['loop']:.0f}" if "loop" in mem else "-",
            check_text,
        )
    console = Console()
    if not console.is_terminal:  # piped to a log: do not wrap the table at 80 columns
        console = Console(width=140)
    console.print(table)


# -------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=list(LEARNERS), metavar="NAME",
                        help=f"learners to measure (default: all of {', '.join(LEARNERS)})")
    parser.add_argument("--meta-batch", type=int, default=None, help="tasks per meta-step (default 32; 8 with --quick)")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15, help="query examples per class")
    parser.add_argument("--repeats", type=int, default=None, help="timed meta-steps per implementation (default 3; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed meta-steps per implementation first (>= 1; the first checks the loss)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--data-dir", default=None, help="datasets directory: time real Omniglot episodes (default: random tensors)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of the episodes")
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default benchmarks/results/throughput-<device>[-quick].json)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--quick", action="store_true", help="smoke run of the harness: meta-batch 8, 2 repeats")
    parser.add_argument("--allow-mismatch", action="store_true", help="exit 0 even if an implementation pair disagrees")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.meta_batch is None:
        args.meta_batch = 8 if args.quick else 32
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    for name in ("meta_batch", "ways", "shots", "queries", "repeats", "warmup"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    return args


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    batch = episode_batch(args)
    device_batch = batch.to(args.device)
    rows = []
    for name in args.learners:
        learner = build_learner(name, args.ways, args.seed)
        equivalence = check_equivalence(learner, batch)
        learner.to(args.device)
        seconds, first_loss = time_steps(step_functions(learner, device_batch), args.warmup, args.repeats, args.device)
        loss_error = abs(first_loss["metaauto"] - first_loss["loop"]) / max(abs(first_loss["metaauto"]), 1e-12)
        equivalence.update(loss32_metaauto=first_loss["metaauto"], loss32_loop=first_loss["loop"], loss32_rel_error=loss_error)
        equivalence["ok"] = equivalence["ok"] and loss_error <= LOSS_RTOL_32
        row: dict[str, Any] = {
            "learner": name,
            "hparams": learner.hparams(),
            "execution": learner.execution,
            "execution_reason": learner.execution_reason,
            "goal": speedup_goal(learner, args.device),
            "equivalence": equivalence,
        }
        for impl, times in seconds.items():
            median = statistics.median(times)
            row[impl] = {"seconds": times, "median_s": median, "tasks_per_s": batch.tasks / median}
        row["speedup"] = row["metaauto"]["tasks_per_s"] / row["loop"]["tasks_per_s"]
        if not args.no_memory:
            if args.device == "cuda":
                steps = step_functions(learner, device_batch)
                memory = {impl: measure_step_memory(steps[impl], "cuda") for impl in steps}
            else:
                memory = measure_memory_subprocess(learner, batch, args.ways, args.seed)
            row["peak_memory_mib"] = {impl: m["peak_mib"] for impl, m in memory.items()}
            row["memory_method"] = next(iter(memory.values()))["method"]
        if not equivalence["ok"]:
            print(
                f"\033[1;31mMISMATCH {name}: metaauto and the loop disagree (float64 on {equivalence['tasks']} tasks: "
                f"loss {equivalence['loss_rel_error']:.2e}, gradient {equivalence['grad_rel_error']:.2e} at "
                f"{equivalence['grad_worst_parameter']}; float32 loss {loss_error:.2e})\033[0m",
                file=sys.stderr,
            )
        rows.append(row)
        print(f"{name}: {row['speedup']:.2f}x ({row['metaauto']['tasks_per_s']:.2f} vs {row['loop']['tasks_per_s']:.2f} tasks/s)", file=sys.stderr)
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "device": args.device,
        "machine": machine_info(args.device),
        "settings": {
            "backbone": "conv4",
            "input_shape": list(INPUT_SHAPE),
            "ways": args.ways,
            "shots": args.shots,
            "queries": args.queries,
            "meta_batch": args.meta_batch,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "quick": args.quick,
            "data": "omniglot" if args.data_dir is not None else "random",
            "timed": "forward + backward of one meta-step (no optimiser step), median of repeats",
        },
    }
    return rows, meta


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_worker is not None:
        memory_worker(args.memory_worker)
        return 0
    # both implementations are timed in this process under the same allocator setting (see metaauto.runtime)
    allocator_tuned = tune_cpu_allocator()
    rows, meta = run(args)
    meta["cpu_allocator_tuned"] = allocator_tuned
    print_table(rows, meta)
    path = args.json or RESULTS_DIR / f"throughput-{args.device}{'-quick' if args.quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {path}")
    mismatched = [r["learner"] for r in rows if not r["equivalence"]["ok"]]
    if mismatched:
        print(f"\033[1;31mmetaauto and the reference loop disagree for: {', '.join(mismatched)}\033[0m", file=sys.stderr)
        return 0 if args.allow_mismatch else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
