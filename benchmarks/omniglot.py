"""Omniglot meta-test accuracy of every learner after a fixed wall-clock budget, beside the papers' figures.

For each setting (default 5-way 1-shot and 20-way 1-shot) and each learner, a Conv4 (width 64) is
meta-trained from the learner's published defaults (:func:`metaauto.learners.learner_defaults`) with
Adam at ``--meta-lr`` until ``--budget-seconds`` of wall clock have passed, with periodic validation on
the meta-val alphabets; :func:`metaauto.engine.meta_train` restores the best validated weights. The
learner is then scored on ``--eval-tasks`` meta-test episodes (mean accuracy +- 95% CI). The scratch and
pretrain baselines (:mod:`metaauto.evaluation.baselines`) are scored on the very same episodes, so every
learner also gets a paired difference to each baseline; the pretrain baseline gets the same wall-clock
budget as a learner for its pre-training (capped at ``--pretrain-max-steps``).

What the budget covers: everything :func:`~metaauto.engine.meta_train` does -- sampling, meta-updates
and validations. Training stops after the first meta-update that ends past the budget; the validation
that follows that stop is included in the reported training wall time, which therefore overruns the
budget by at most one meta-update and one validation. Meta-test evaluation is timed separately.

Choices that are not the papers' (the full paper protocol -- tens of thousands of meta-updates on a
GPU -- is the GPU run's job):

* Splits: meta-train/meta-val are *alphabets* of ``images_background`` and meta-test is
  ``images_evaluation`` (Lake et al.'s split), not the 1200/423-character split of Vinyals et al. that
  the papers use; transfer to unseen alphabets is somewhat harder. Rotations by multiples of 90 degrees
  are added as classes of their own (``--rotations``, the augmentation the papers use), in every split.
* Meta-batch (tasks per meta-update, ``--meta-batch-size``): by default the papers' -- 32 tasks at
  5-way and 16 at 20-way for the MAML family (Finn et al.'s released configuration, which ANIL and
  Meta-SGD follow), 5 for Reptile (Nichol et al.), one episode per update for the metric learners
  (Snell et al., Sung et al.). Training episodes have the test setting's ways (ProtoNet's paper trains
  with 60-way episodes).
* Queries per class (``--queries``): 15 at 5 ways or fewer, 5 above (20-way episodes would otherwise
  exceed Omniglot's 20 drawings per character with 1 shot + 19 queries anyway).
* Every learner uses Adam at 1e-3 and its 5-way defaults in every setting (MAML's paper uses 5 inner
  steps of 0.1 at 20-way; Reptile's paper anneals an SGD outer step).
* Validation every ``--val-every-tasks`` meta-training tasks (so learners with small meta-batches do
  not validate far more often), on ``--val-tasks`` fixed meta-val episodes.
* Every learner, metric learners included, embeds and adapts each task on its own (Conv4's BatchNorm
  normalises per task), so the evaluation batch size changes speed only, never scores.

Partial results are written to the JSON after every (setting, method), and ``--resume`` skips the
pairs the JSON already holds (it refuses a JSON written with a different protocol).

Usage::

    python benchmarks/omniglot.py --data-dir ../shared/data                       # 20 min per learner and setting
    python benchmarks/omniglot.py --budget-seconds 120 --json /tmp/omni.json --resume
    python benchmarks/omniglot.py --learners protonet maml --settings 5w1s \\
        --budget-seconds 10 --eval-tasks 20 --json /tmp/omni-smoke.json       # smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and an uninstalled `metaauto` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.throughput import machine_info
from metaauto.backbones import make_backbone
from metaauto.engine import Callback, RunState, TrainConfig, meta_train, resolve_device
from metaauto.engine.history import StepRecord, ValidationRecord
from metaauto.evaluation import Baseline, PretrainBaseline, ScratchBaseline, evaluate, paired_difference
from metaauto.evaluation.protocol import run_protocol
from metaauto.learners import LEARNERS, learner_defaults, make_learner
from metaauto.runtime import tune_cpu_allocator
from metaauto.tasks import load_collection
from metaauto.tasks.omniglot_archive import DRAWINGS

RESULTS_DIR = Path(__file__).resolve().parent / "results"
IMAGE_SIZE = 28
CONV4_WIDTH = 64
#: tasks forwarded together when scoring gradient learners and baselines (does not change their scores)
EVAL_BATCH = 25
#: pre-training steps timed to size the pretrain baseline's budgeted run
CALIBRATION_STEPS = 20
#: at most one training progress line per this many seconds
PROGRESS_EVERY_S = 60.0
BASELINES = ("scratch", "pretrain")

#: Published Omniglot meta-test accuracies (%), ``setting -> (mean, 95% CI or None when not reported)``.
#: A setting a paper does not report is absent rather than guessed.
PAPER_RESULTS: dict[str, dict[str, Any]] = {
    "maml": {
        "source": "Finn, Abbeel & Levine 2017, 'Model-Agnostic Meta-Learning for Fast Adaptation of Deep "
        "Networks', ICML, Table 1",
        "5w1s": (98.7, 0.4),
        "20w1s": (95.8, 0.3),
    },
    "fomaml": {
        "source": "Finn, Abbeel & Levine 2017, Table 1 ('MAML, first order approx.')",
        "5w1s": (98.3, 0.5),
        "20w1s": (89.4, 0.5),
    },
    "reptile": {
        "source": "Nichol, Achiam & Schulman 2018, 'On First-Order Meta-Learning Algorithms', Table 1, "
        "'Reptile + Transduction' (Conv4's batch-statistics BatchNorm is transductive too; without "
        "transduction the paper reports 95.39 / 88.14)",
        "5w1s": (97.68, 0.04),
        "20w1s": (89.43, 0.14),
    },
    "metasgd": {
        "source": "Li, Zhou, Chen & Li 2017, 'Meta-SGD: Learning to Learn Quickly for Few-Shot Learning', Table 1",
        "5w1s": (99.53, 0.26),
        "20w1s": (95.93, 0.38),
    },
    "anil": {
        "source": "Raghu, Raghu, Bengio & Vinyals 2020, 'Rapid Learning or Feature Reuse? Towards "
        "Understanding the Effectiveness of MAML', ICLR, Table 2 (Omniglot 5-way 1-shot not reported)",
        "20w1s": (96.2, 0.5),
    },
    "protonet": {
        "source": "Snell, Swersky & Zemel 2017, 'Prototypical Networks for Few-shot Learning', NeurIPS, "
        "Table 1 (no CI reported; trained with 60-way episodes)",
        "5w1s": (98.8, None),
        "20w1s": (96.0, None),
    },
    "matchingnet": {
        "source": "Vinyals et al. 2016, 'Matching Networks for One Shot Learning', NeurIPS, Table 1 "
        "(without fine-tuning; no CI reported)",
        "5w1s": (98.1, None),
        "20w1s": (93.8, None),
    },
    "relationnet": {
        "source": "Sung et al. 2018, 'Learning to Compare: Relation Network for Few-Shot Learning', CVPR, Table 1",
        "5w1s": (99.6, 0.2),
        "20w1s": (97.6, 0.2),
    },
}

#: tasks per meta-update by learner and ways (see the module docstring); ``None`` key: any ways
PAPER_META_BATCH: dict[str, dict[int | None, int]] = {
    **{name: {5: 32, 20: 16, None: 16} for name in ("maml", "fomaml", "metasgd", "anil")},
    "reptile": {None: 5},
    **{name: {None: 1} for name in ("protonet", "matchingnet", "relationnet")},
}


@dataclass(frozen=True)
class Setting:
    ways: int
    shots: int
    queries: int

    @property
    def key(self) -> str:
        return f"{self.ways}w{self.shots}s"


# ------------------------------------------------------------------------------------------- pieces


class WallClockBudget(Callback):
    """Stops meta-training after the first meta-update that ends past ``seconds``, and reports progress."""

    def __init__(self, seconds: float, label: str) -> None:
        self.seconds = float(seconds)
        self.label = label
        self.started = 0.0
        self.last_print = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def on_train_start(self, run: RunState) -> None:
        self.started = self.last_print = time.perf_counter()

    def on_step(self, run: RunState, record: StepRecord) -> None:
        elapsed = self.elapsed()
        if elapsed >= self.seconds:
            run.request_stop("budget")
        if time.perf_counter() - self.last_print >= PROGRESS_EVERY_S:
            self.last_print = time.perf_counter()
            log(
                f"[{self.label}] step {record.step}: loss {record.loss:.3f}, train acc {100 * record.metric:.1f}%, "
                f"{record.tasks_per_s:.1f} tasks/s, {elapsed:.0f}/{self.seconds:.0f}s"
            )

    def on_validation(self, run: RunState, record: ValidationRecord) -> None:
        log(
            f"[{self.label}] step {record.step}: val {100 * record.metric:.2f}% +- {100 * record.ci95:.2f}"
            f"{' (best)' if record.is_best else ''}, {self.elapsed():.0f}s"
        )


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_setting(text: str, queries: int | None) -> Setting:
    match = re.fullmatch(r"(\d+)w(\d+)s", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"setting {text!r} is not of the form <ways>w<shots>s, e.g. 5w1s")
    ways, shots = int(match.group(1)), int(match.group(2))
    return Setting(ways, shots, queries if queries is not None else (15 if ways <= 5 else 5))


def meta_batch_size(name: str, ways: int, override: int | None) -> int:
    if override is not None:
        return override
    table = PAPER_META_BATCH[name]
    return table.get(ways, table[None])


def paper_figure(method: str, setting: str) -> dict[str, Any] | None:
    entry = PAPER_RESULTS.get(method, {})
    if setting not in entry:
        return None
    mean, ci95 = entry[setting]
    return {"accuracy_pct": mean, "ci95_pct": ci95, "source": entry["source"]}


def backbone_spec(collection: Any) -> dict[str, Any]:
    return {"name": "conv4", "input_shape": list(collection.input_shape), "width": CONV4_WIDTH}


def build_learner(name: str, ways: int, collection: Any, seed: int) -> torch.nn.Module:
    """Conv4 (with a ``ways``-wide head for gradient learners), seeded, wrapped in ``name``'s defaults."""
    gradient = LEARNERS[name].family == "gradient"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_backbone(**backbone_spec(collection), out_features=ways if gradient else None)
        return make_learner(name, model)


def result_row(setting: Setting, method: str, kind: str, evaluation: Any, **extra: Any) -> dict[str, Any]:
    return {
        "setting": setting.key,
        "ways": setting.ways,
        "shots": setting.shots,
        "queries": setting.queries,
        "method": method,
        "kind": kind,
        "accuracy_pct": 100 * evaluation.mean,
        "ci95_pct": 100 * evaluation.ci95,
        "eval_tasks": evaluation.tasks,
        **extra,
        "paper": paper_figure(method, setting.key),
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "per_task": [round(v, 6) for v in evaluation.per_task],
    }


# ---------------------------------------------------------------------------------------------- runs


def run_learner(
    name: str, setting: Setting, collection: Any, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    label = f"{setting.key} {name}"
    batch = meta_batch_size(name, setting.ways, args.meta_batch_size)
    learner = build_learner(name, setting.ways, collection, args.seed)
    config = TrainConfig(
        ways=setting.ways,
        shots=setting.shots,
        queries=setting.queries,
        meta_batch_size=batch,
        meta_steps=args.max_steps,
        meta_lr=args.meta_lr,
        optimizer="adam",
        val_every=max(1, round(args.val_every_tasks / batch)),
        val_tasks=args.val_tasks,
        seed=args.seed,
        device=str(device),
        amp=args.amp,
        progress=False,
    )
    log(f"[{label}] meta-training for {args.budget_seconds:.0f}s: meta-batch {batch}, validation every "
        f"{config.val_every} steps, {learner.hparams()}")
    result = meta_train(learner, collection, config, callbacks=[WallClockBudget(args.budget_seconds, label)])
    eval_batch = EVAL_BATCH  # speed only: every learner adapts and embeds each task on its own
    started = time.perf_counter()
    evaluation = evaluate(
        result.learner, collection, split="test", ways=setting.ways, shots=setting.shots, queries=setting.queries,
        tasks=args.eval_tasks, seed=args.seed, batch_size=eval_batch, device=device,
    )
    eval_wall = time.perf_counter() - started
    log(f"[{label}] meta-test {100 * evaluation.mean:.2f}% +- {100 * evaluation.ci95:.2f} after "
        f"{result.final_step} steps ({result.wall_time_s:.0f}s train, {eval_wall:.0f}s eval)")
    return result_row(
        setting, name, "learner", evaluation,
        meta_steps=result.final_step,
        meta_batch_size=batch,
        tasks_seen=result.final_step * batch,
        stop_reason=result.stop_reason,
        best_step=result.best_step,
        best_val_accuracy_pct=None if result.best_value is None else 100 * result.best_value,
        validations=len(result.history.val),
        val_every=config.val_every,
        train_wall_s=result.wall_time_s,
        eval_wall_s=eval_wall,
        eval_batch_size=eval_batch,
        precision=result.precision,
        hparams=learner.hparams(),
    )


def score_baseline(baseline: Baseline, setting: Setting, collection: Any, args: argparse.Namespace) -> tuple[Any, float]:
    started = time.perf_counter()
    results = run_protocol(
        {baseline.name: baseline.scorer(seed=args.seed, batch_size=EVAL_BATCH)}, collection, split="test",
        ways=setting.ways, shots=setting.shots, queries=setting.queries, tasks=args.eval_tasks, seed=args.seed,
    )
    return results[baseline.name], time.perf_counter() - started


def fit_pretrain(
    collection: Any, ways: int, args: argparse.Namespace, device: torch.device
) -> tuple[PretrainBaseline, dict[str, Any]]:
    """Pre-train for about ``--budget-seconds``: time two short runs, then size the real one from them.

    The difference between a run of ``2n`` and one of ``n`` steps is the cost of ``n`` steps without the
    fixed costs (pooling the data, warming up kernels), which would otherwise shrink the estimate a lot
    on a GPU. Both short runs count against the budget.
    """
    timings = []
    started = time.perf_counter()
    for steps in (CALIBRATION_STEPS, 2 * CALIBRATION_STEPS):
        begin = time.perf_counter()
        probe = PretrainBaseline(backbone_spec(collection), pretrain_steps=steps, seed=args.seed)
        probe.fit(collection, ways=ways, device=device)
        timings.append(time.perf_counter() - begin)
    calibration = time.perf_counter() - started
    per_step = max(timings[1] - timings[0], 1e-3 * timings[1]) / CALIBRATION_STEPS
    steps = max(1, min(args.pretrain_max_steps, int((args.budget_seconds - calibration) / per_step)))
    log(f"[pretrain] {per_step * 1000:.1f} ms per pre-training step: {steps} steps")
    baseline = PretrainBaseline(backbone_spec(collection), pretrain_steps=steps, seed=args.seed)
    baseline.fit(collection, ways=ways, device=device)
    return baseline, {
        "pretrain_steps": steps,
        "pretrain_calibration_s": calibration,
        "train_wall_s": time.perf_counter() - started,
    }


def run_baseline(
    method: str, setting: Setting, collection: Any, args: argparse.Namespace, device: torch.device,
    fitted: dict[str, Any],
) -> dict[str, Any]:
    """Score ``method`` on ``setting``; the pretrain network is fitted once and reused across settings."""
    label = f"{setting.key} {method}"
    extra: dict[str, Any] = {}
    if method == "scratch":
        baseline: Baseline = ScratchBaseline(backbone_spec(collection), seed=args.seed)
        baseline.fit(collection, ways=setting.ways, device=device)
        extra["train_wall_s"] = 0.0
    elif "pretrain" in fitted:
        baseline, info = fitted["pretrain"]
        baseline.fit(collection, ways=setting.ways, device=device)  # same data: only resizes the probe head
        extra.update(info, pretrain_reused_from=info["setting"])
    else:
        log(f"[{label}] pre-training for {args.budget_seconds:.0f}s")
        baseline, info = fit_pretrain(collection, setting.ways, args, device)
        fitted["pretrain"] = (baseline, {**info, "setting": setting.key})
        extra.update(info)
    evaluation, eval_wall = score_baseline(baseline, setting, collection, args)
    log(f"[{label}] meta-test {100 * evaluation.mean:.2f}% +- {100 * evaluation.ci95:.2f} ({eval_wall:.0f}s eval)")
    extra.pop("setting", None)
    return result_row(setting, method, "baseline", evaluation, eval_wall_s=eval_wall, settings=baseline.describe(), **extra)


# ------------------------------------------------------------------------------------------- report


def protocol(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """What results in one JSON must share to sit in one table (``--resume`` checks it)."""
    return {
        "device": device.type,
        "budget_seconds": args.budget_seconds,
        "max_steps": args.max_steps,
        "eval_tasks": args.eval_tasks,
        "val_tasks": args.val_tasks,
        "val_every_tasks": args.val_every_tasks,
        "meta_lr": args.meta_lr,
        "optimizer": "adam",
        "meta_batch_size": args.meta_batch_size if args.meta_batch_size is not None else "paper",
        "queries": args.queries if args.queries is not None else "15 if ways <= 5 else 5",
        "seed": args.seed,
        "amp": args.amp,
        "rotations": args.rotations,
        "image_size": IMAGE_SIZE,
        "backbone": {"name": "conv4", "width": CONV4_WIDTH},
        "pretrain_max_steps": args.pretrain_max_steps,
    }


def new_report(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    return {
        "benchmark": "omniglot",
        "protocol": protocol(args, device),
        "runs": [],
        "paper_results": {
            name: {**{k: v for k, v in entry.items() if k == "source"},
                   **{k: {"accuracy_pct": v[0], "ci95_pct": v[1]} for k, v in entry.items() if k != "source"}}
            for name, entry in PAPER_RESULTS.items()
        },
        "learner_defaults": {name: learner_defaults(name) for name in LEARNERS},
        "notes": __doc__.split("Usage::")[0].strip(),
        "results": [],
    }


def load_report(path: Path, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    report = json.loads(path.read_text())
    current = protocol(args, device)
    saved = report.get("protocol", {})
    if saved != current:
        diffs = "; ".join(
            f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
            for k in sorted(set(saved) | set(current))
            if saved.get(k) != current.get(k)
        )
        raise SystemExit(f"--resume: {path} was written with another protocol ({diffs}); use another --json")
    return report


def attach_paired(report: dict[str, Any]) -> None:
    """Every learner's paired difference (percentage points, 95% CI) to each baseline of its setting."""
    baselines = {(r["setting"], r["method"]): r for r in report["results"] if r["kind"] == "baseline"}
    for row in report["results"]:
        if row["kind"] != "learner":
            continue
        row["paired_vs_baselines"] = {}
        for method in BASELINES:
            other = baselines.get((row["setting"], method))
            if other is not None and len(other["per_task"]) == len(row["per_task"]):
                mean, ci95 = paired_difference(row["per_task"], other["per_task"])
                row["paired_vs_baselines"][method] = {"difference_pp": 100 * mean, "ci95_pp": 100 * ci95}


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Atomically replace ``path``, so a run killed while writing keeps the previous results."""
    attach_paired(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)


def table_rows(report: dict[str, Any], settings: list[str]) -> list[list[str]]:
    order = {s: i for i, s in enumerate(settings)}
    methods = [*LEARNERS, *BASELINES]
    rows = sorted(
        (r for r in report["results"] if r["setting"] in order),
        key=lambda r: (order[r["setting"]], methods.index(r["method"])),
    )
    lines = []
    for r in rows:
        if r["kind"] == "learner":
            steps = str(r["meta_steps"])
        elif r["method"] == "pretrain":
            steps = f"{r['pretrain_steps']} pre-train"
        else:
            steps = "-"
        vs = r.get("paired_vs_baselines", {}).get("pretrain")
        paper = r["paper"]
        paper_text = "-"
        if paper is not None:
            paper_text = str(paper["accuracy_pct"])
            if paper["ci95_pct"] is not None:
                paper_text += f" +- {paper['ci95_pct']}"
        lines.append([
            r["setting"],
            r["method"],
            f"{r['accuracy_pct']:.2f} +- {r['ci95_pct']:.2f}",
            steps,
            train_text(r),
            f"{r['eval_wall_s']:.0f}",
            "-" if vs is None else f"{vs['difference_pp']:+.2f} +- {vs['ci95_pp']:.2f}",
            paper_text,
        ])
    return lines


def train_text(row: dict[str, Any]) -> str:
    if row["method"] == "scratch":
        return "-"
    reused = row.get("pretrain_reused_from")
    return f"{row['train_wall_s']:.0f}" + (f" (from {reused})" if reused else "")


COLUMNS = (
    "setting", "method", "meta-test acc % (95% CI)", "meta-steps", "train s", "eval s", "vs pretrain (pp, paired)",
    "paper %",
)


def title(report: dict[str, Any]) -> str:
    p = report["protocol"]
    machine = report["runs"][-1]["machine"]
    return (
        f"Omniglot meta-test accuracy after {p['budget_seconds']:g}s of meta-training per learner, "
        f"{p['eval_tasks']} test episodes, {p['device']} ({machine['cpu_model']}, {machine['torch_threads']} threads)"
    )


def print_table(report: dict[str, Any], settings: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title(report))
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("setting", "method") else "right")
    for line in table_rows(report, settings):
        table.add_row(*line)
    console = Console()
    if not console.is_terminal:  # piped to a log: do not wrap the table at 80 columns
        console = Console(width=160)
    console.print(table)


def write_markdown(path: Path, report: dict[str, Any], settings: list[str]) -> None:
    lines = [f"**{title(report)}**", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row).replace("+-", "±") + " |" for row in table_rows(report, settings)]
    sources = sorted({r["paper"]["source"] for r in report["results"] if r["paper"] is not None})
    if sources:
        lines += ["", "Paper figures: " + "; ".join(sources) + "."]
    lines += ["", f"Command: `{report['runs'][-1]['command']}`"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# -------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=os.environ.get("METAAUTO_DATA_DIR"),
                        help="directory holding omniglot/images_*.zip (default: $METAAUTO_DATA_DIR)")
    parser.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=list(LEARNERS), metavar="NAME",
                        help=f"learners to run (default: all of {', '.join(LEARNERS)})")
    parser.add_argument("--settings", nargs="+", default=["5w1s", "20w1s"], metavar="NwKs",
                        help="episode settings, e.g. 5w1s 20w1s 5w5s (default: 5w1s 20w1s)")
    parser.add_argument("--budget-seconds", type=float, default=1200.0,
                        help="wall-clock meta-training budget per learner and setting (default 1200)")
    parser.add_argument("--max-steps", type=int, default=1_000_000,
                        help="meta-update cap, in case the budget allows more (default 1000000)")
    parser.add_argument("--eval-tasks", type=int, default=600, help="meta-test episodes per setting (default 600)")
    parser.add_argument("--meta-batch-size", type=int, default=None,
                        help="tasks per meta-update for every learner (default: each paper's, see above)")
    parser.add_argument("--queries", type=int, default=None,
                        help="query examples per class in every setting (default 15 at <= 5 ways, else 5)")
    parser.add_argument("--meta-lr", type=float, default=1e-3, help="Adam meta learning rate (default 1e-3)")
    parser.add_argument("--val-tasks", type=int, default=100, help="fixed meta-val episodes per validation (default 100)")
    parser.add_argument("--val-every-tasks", type=int, default=3200,
                        help="validate after every this many meta-training tasks (default 3200)")
    parser.add_argument("--rotations", action=argparse.BooleanOptionalAction, default=True,
                        help="add 90/180/270-degree rotations as classes (default: on, as in the papers)")
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                        help="also score the scratch and pretrain baselines (default: on)")
    parser.add_argument("--pretrain-max-steps", type=int, default=20_000,
                        help="cap on the pretrain baseline's pre-training steps (default 20000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, training and test episodes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                        help="mixed precision during meta-training (auto: bf16/fp16 on CUDA only)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default benchmarks/results/omniglot-<device>.json)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown here")
    parser.add_argument("--resume", action="store_true", help="keep the JSON's results and skip the pairs it holds")
    args = parser.parse_args(argv)
    positive = ("budget_seconds", "max_steps", "eval_tasks", "val_tasks", "val_every_tasks", "pretrain_max_steps", "meta_lr")
    for name in positive + ("meta_batch_size", "queries", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.data_dir is None:
        parser.error("no data directory: pass --data-dir DIR or set METAAUTO_DATA_DIR")
    try:
        args.settings = [parse_setting(s, args.queries) for s in dict.fromkeys(args.settings)]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    for setting in args.settings:
        if setting.shots + setting.queries > DRAWINGS:
            parser.error(f"{setting.key} with {setting.queries} queries needs {setting.shots + setting.queries} "
                         f"drawings per character; Omniglot has {DRAWINGS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tune_cpu_allocator()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    path = args.json or RESULTS_DIR / f"omniglot-{device.type}.json"
    if args.resume and path.is_file():
        report = load_report(path, args, device)
        log(f"resuming {path}: {len(report['results'])} results kept")
    else:
        report = new_report(args, device)
    report["runs"].append({
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(argv),
        "machine": machine_info(device.type),
        "budget_seconds": args.budget_seconds,
        "cpu_allocator_tuned": tune_cpu_allocator(),
    })

    collection = load_collection("omniglot", data_dir=args.data_dir, image_size=IMAGE_SIZE, rotations=args.rotations)
    summary = {split: s.units for split, s in collection.summary().items()}
    log(f"omniglot classes per split: {summary} (rotations {'on' if args.rotations else 'off'}); device {device}")
    done = {(r["setting"], r["method"]) for r in report["results"]}
    methods = [*args.learners, *(BASELINES if args.baselines else ())]
    fitted: dict[str, Any] = {}
    for setting in args.settings:
        for method in methods:
            if (setting.key, method) in done:
                log(f"[{setting.key} {method}] already in {path}: skipped")
                continue
            if method in LEARNERS:
                row = run_learner(method, setting, collection, args, device)
            else:
                row = run_baseline(method, setting, collection, args, device, fitted)
            row["run"] = len(report["runs"]) - 1
            report["results"].append(row)
            write_report(path, report)
    write_report(path, report)
    settings = [s.key for s in args.settings]
    print_table(report, settings)
    if args.markdown is not None:
        write_markdown(args.markdown, report, settings)
        log(f"wrote {args.markdown}")
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
