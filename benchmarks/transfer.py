"""Both transfer domains in one run: MovieLens cold start and leave-one-site-out heart disease.

Runs :mod:`benchmarks.transfer_movielens` (every baseline and meta-learner at K = 5, 10, 20 over all
meta-test users) and :mod:`benchmarks.transfer_heart` (each of the four held-out sites at K = 5, 10,
draws of the support set), then states per K (MovieLens) and on the mean over sites (heart disease)
whether the best meta-learner beats the best baseline, and writes everything to
``benchmarks/results/transfer.json`` plus the markdown tables (``transfer.md`` next to it).

The heart-disease part is a research benchmark, not a clinical tool.

    METAAUTO_DATA_DIR=/work/shared/data .venv/bin/python -m benchmarks.transfer            # the full run
    METAAUTO_DATA_DIR=/work/shared/data .venv/bin/python -m benchmarks.transfer --quick    # a smoke run (~2 min)

``--ml-*`` options go to the MovieLens script (``--ml-meta-steps 300 --ml-learners metasgd``), ``--heart-*``
to the heart-disease one.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from benchmarks import transfer_heart, transfer_movielens

RESULTS = Path(__file__).resolve().parent / "results"
META_SUFFIX = " (meta-learned)"
HIGHER = {"mae": False, "rmse": False, "ndcg@10": True, "auroc": True, "balanced_accuracy": True}


def movielens_verdicts(ml: dict) -> list[dict]:
    """Per K and metric: the best meta-learner against the best baseline (means over users)."""
    out = []
    for k, block in ml["results"].items():
        metrics = block["metrics"]
        for metric, higher in HIGHER.items():
            if metric not in next(iter(metrics.values())):
                continue
            pick = max if higher else min
            metas = {m: v[metric]["mean"] for m, v in metrics.items() if m.endswith(META_SUFFIX)}
            bases = {m: v[metric]["mean"] for m, v in metrics.items() if not m.endswith(META_SUFFIX)}
            if not metas:
                continue
            meta = pick(metas, key=metas.get)
            base = pick(bases, key=bases.get)
            wins = metas[meta] > bases[base] if higher else metas[meta] < bases[base]
            out.append({"k": int(k), "metric": metric, "best_meta": meta, "meta": metas[meta], "meta_ci95": metrics[meta][metric]["ci95"],
                        "best_baseline": base, "baseline": bases[base], "baseline_ci95": metrics[base][metric]["ci95"], "meta_wins": wins})
    return out


def heart_verdicts(heart: dict, learners: tuple[str, ...]) -> list[dict]:
    """Per K and metric: mean over the sites that could serve K, best meta-learner vs best baseline."""
    out = []
    ks = sorted({k for site in heart["sites"].values() for k in site["k"]}, key=int)
    for k in ks:
        rows = {s: d["k"][k] for s, d in heart["sites"].items() if k in d["k"] and "skipped" not in d["k"][k]}
        if not rows:
            continue
        methods = list(next(iter(rows.values())))
        for metric in ("auroc", "balanced_accuracy"):
            means = {m: sum(r[m][metric] for r in rows.values()) / len(rows) for m in methods}
            metas = {m: v for m, v in means.items() if m in learners}
            bases = {m: v for m, v in means.items() if m not in learners}
            meta, base = max(metas, key=metas.get), max(bases, key=bases.get)
            per_site = {s: r[meta][metric] > max(r[b][metric] for b in bases) for s, r in rows.items()}
            out.append({"k": int(k), "metric": metric, "sites": sorted(rows), "best_meta": meta, "meta": metas[meta],
                        "best_baseline": base, "baseline": bases[base], "meta_wins": metas[meta] > bases[base],
                        "meta_wins_per_site": per_site})
    return out


def verdict_markdown(rows: list[dict], domain: str) -> str:
    lines = [f"| K | metric | best meta-learner | best baseline | meta-learner wins? |", "|---|---|---|---|---|"]
    for r in rows:
        meta = f"{r['best_meta'].replace(META_SUFFIX, '')} {r['meta']:.4f}" + (f" ± {r['meta_ci95']:.4f}" if "meta_ci95" in r else "")
        base = f"{r['best_baseline']} {r['baseline']:.4f}" + (f" ± {r['baseline_ci95']:.4f}" if "baseline_ci95" in r else "")
        extra = ""
        if "meta_wins_per_site" in r:
            won = [s for s, ok in r["meta_wins_per_site"].items() if ok]
            extra = f" (per site: wins at {', '.join(won) if won else 'none'} of {', '.join(r['sites'])})"
        lines.append(f"| {r['k']} | {r['metric']} | {meta} | {base} | {'**yes**' if r['meta_wins'] else 'no'}{extra} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the wiring, not the methods")
    parser.add_argument("--skip-movielens", action="store_true", help="keep the MovieLens results already in --output")
    parser.add_argument("--skip-heart", action="store_true", help="keep the heart-disease results already in --output")
    parser.add_argument("--ml-meta-steps", type=int, default=300)
    parser.add_argument("--ml-learners", nargs="+", default=["maml", "anil", "metasgd"])
    parser.add_argument("--ml-pooled-epochs", type=int, default=3)
    parser.add_argument("--ml-extra", default="", help="more options for transfer_movielens, one string")
    parser.add_argument("--heart-meta-steps", type=int, default=300)
    parser.add_argument("--heart-draws", type=int, default=100)
    parser.add_argument("--heart-matched-steps", action="store_true",
                        help="add a 'maml-1step' row: MAML adapted with the one inner step it is meta-trained with "
                             "(its default evaluates with 3 steps at inner lr 0.4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=None, help="default results/transfer.json (--quick: transfer-quick.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.ml_meta_steps, args.ml_learners, args.ml_pooled_epochs = 10, ["anil"], 1
        args.heart_meta_steps, args.heart_draws = 20, 10
    output = Path(args.output or RESULTS / ("transfer-quick.json" if args.quick else "transfer.json"))
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    document: dict = {
        "command": "python -m benchmarks.transfer " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "quick": args.quick,
    }
    previous = json.loads(output.read_text()) if output.exists() else {}
    document["runs"] = previous.get("runs", []) + [{"command": document["command"], "date": document["date"],
                                                    "domains": [d for d, skip in (("movielens", args.skip_movielens),
                                                                                  ("heart_disease", args.skip_heart)) if not skip]}]
    markdown = []
    if args.skip_movielens and "movielens" in previous:
        document["movielens"] = previous["movielens"]
        markdown += previous["markdown_movielens"].splitlines()
    if not args.skip_movielens:
        ml_argv = ["--meta-steps", str(args.ml_meta_steps), "--learners", *args.ml_learners,
                   "--pooled-epochs", str(args.ml_pooled_epochs), "--seed", str(args.seed),
                   "--output", str(output.with_name(output.stem + "-ml.json"))]
        if args.data_dir:
            ml_argv += ["--data-dir", args.data_dir]
        if args.threads:
            ml_argv += ["--threads", str(args.threads)]
        ml_argv += args.ml_extra.split()
        ml = transfer_movielens.main(ml_argv)
        verdicts = movielens_verdicts(ml)
        document["movielens"] = {**ml, "verdicts": verdicts}
        markdown += ["## MovieLens cold start", "", ml["table"], "", verdict_markdown(verdicts, "movielens"), ""]
    document["markdown_movielens"] = "\n".join(markdown)
    heart_start = len(markdown)
    if args.skip_heart and "heart_disease" in previous:
        document["heart_disease"] = previous["heart_disease"]
        markdown += previous["markdown_heart"].splitlines()
    if not args.skip_heart:
        variants = {"maml-1step": ("maml", {"eval_inner_steps": 1})} if args.heart_matched_steps else {}
        heart = transfer_heart.run(args.data_dir, [5, 10], args.heart_draws, args.heart_meta_steps, args.seed, variants)
        verdicts = heart_verdicts(heart, tuple(transfer_heart.LEARNERS) + tuple(variants))
        document["heart_disease"] = {**heart, "verdicts": verdicts}
        markdown += ["## Heart disease, leave one site out (research benchmark, not a clinical tool)", "",
                     transfer_heart.markdown(heart, "auroc"), "", transfer_heart.markdown(heart, "balanced_accuracy"), "",
                     verdict_markdown(verdicts, "heart-disease"), ""]
    document["markdown_heart"] = "\n".join(markdown[heart_start:])
    document["seconds"] = round(time.perf_counter() - started, 1)
    document["markdown"] = "\n".join(markdown)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, default=str))
    output.with_suffix(".md").write_text(document["markdown"] + "\n")
    print(document["markdown"])
    print(f"wrote {output} ({document['seconds']}s)", flush=True)
    return document


if __name__ == "__main__":
    main()
