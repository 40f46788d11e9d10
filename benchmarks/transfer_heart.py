"""Leave-one-site-out few-shot transfer on UCI Heart Disease: meta-learners against the usual baselines.

For each held-out site: meta-train ProtoNet and MAML (MLP) on 2-way 5-shot episodes of the other three
sites, fit the pooled baselines on the same three sites, then score every method on the same random
K-shot draws of the held-out site (K = 5, 10). Prints a markdown table (mean +- 95% CI over draws) and
writes ``benchmarks/results/transfer-heart.json``.

Research benchmark, not a clinical tool.

    METAAUTO_DATA_DIR=/work/shared/data python benchmarks/transfer_heart.py --draws 100 --meta-steps 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from metaauto.evaluation.clinical import (
    ClinicalEvaluationError,
    MetaLearned,
    baseline_methods,
    evaluate_transfer,
    meta_train_learner,
)
from metaauto.tasks.heart_disease import SITES
from metaauto.tasks.catalog import load_collection

LEARNERS = ("protonet", "maml")


def run(data_dir: str | None, shots_list: list[int], draws: int, meta_steps: int, seed: int,
        variants: dict[str, tuple[str, dict]] | None = None) -> dict:
    """``variants``: extra meta-learner rows, ``{row name: (learner, hyperparameters)}``."""
    learners = {name: (name, {}) for name in LEARNERS} | dict(variants or {})
    results: dict = {"draws": draws, "meta_steps": meta_steps, "seed": seed, "sites": {},
                     "learners": {k: {"learner": v[0], "hparams": v[1]} for k, v in learners.items()}}
    for site in SITES:
        start = time.time()
        collection = load_collection("heart-disease", data_dir=data_dir, target_site=site, too_small="skip")
        train_x, train_y = collection.split_data("train")
        site_x, site_y = collection.site_data(site)
        methods = [m.fit(train_x, train_y.ravel()) for m in baseline_methods(seed)]
        for row, (name, hparams) in learners.items():
            learner = meta_train_learner(collection, name, shots=5, queries=3, meta_steps=meta_steps, seed=seed, **hparams)
            methods.append(MetaLearned(row, learner))
        per_k = {}
        for shots in shots_list:
            try:
                outcome = evaluate_transfer(methods, site_x, site_y, shots=shots, draws=draws, seed=seed, site=site)
                per_k[str(shots)] = outcome.summary()
            except ClinicalEvaluationError as exc:
                per_k[str(shots)] = {"skipped": str(exc)}
        results["sites"][site] = {
            "patients": int(len(site_y)),
            "positive_rate": float(site_y.mean()),
            "seconds": round(time.time() - start, 1),
            "k": per_k,
        }
        print(f"{site}: done in {time.time() - start:.0f}s", flush=True)
    return results


def markdown(results: dict, metric: str) -> str:
    methods: list[str] = []
    for site in results["sites"].values():
        for row in site["k"].values():
            methods += [m for m in row if m != "skipped" and m not in methods]
    columns = [(site, k) for site, data in results["sites"].items() for k in data["k"]]
    lines = [f"{metric} (mean ± 95% CI over {results['draws']} draws)", ""]
    lines.append("| method | " + " | ".join(f"{s} K={k}" for s, k in columns) + " | mean |")
    lines.append("|---" * (len(columns) + 2) + "|")
    for method in methods:
        cells, values = [], []
        for site, k in columns:
            row = results["sites"][site]["k"][k]
            if "skipped" in row:
                cells.append("n/a")
                continue
            cells.append(f"{row[method][metric]:.3f} ± {row[method][metric + '_ci95']:.3f}")
            values.append(row[method][metric])
        mean = sum(values) / len(values) if values else float("nan")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {mean:.3f} |")
    skipped = [f"{s} K={k}: {results['sites'][s]['k'][k]['skipped']}" for s, k in columns if "skipped" in results["sites"][s]["k"][k]]
    if skipped:
        lines += ["", "n/a: " + "; ".join(skipped)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--meta-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "transfer-heart.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = run(args.data_dir, args.shots, args.draws, args.meta_steps, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    for metric in ("auroc", "balanced_accuracy"):
        print()
        print(markdown(results, metric))


if __name__ == "__main__":
    main()
