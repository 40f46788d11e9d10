"""MovieLens cold start: meta-learners against the classic baselines, K = 5, 10, 20, over all meta-test users.

Every method sees the same meta-test users and, for each K, the same K support ratings per user; the
query is all of that user's other ratings. Reports MAE, RMSE and nDCG@10 (mean ± 95% CI over users),
prints a markdown table and writes ``benchmarks/results/transfer-movielens.json``.

Methods
-------
* global mean, damped item mean (meta-train users), the user's support mean;
* pooled: the MLP backbone trained by plain regression on all meta-train ratings, no adaptation;
* pooled + fine-tune: that model fine-tuned on the K support ratings (SGD, same steps/lr as MAML's eval);
* MF fold-in: biased ALS matrix factorisation on meta-train ratings, a new user's factors solved by ridge
  regression on the item factors from the K ratings;
* maml / anil / metasgd: metaauto learners over the same MLP, meta-trained with
  :func:`metaauto.engine.meta_train` on meta-train users (MeLU-style; one model trained at
  ``--train-shots`` is evaluated at every K), warm-started from the pooled model's weights
  (``--no-warm-start`` to start from random weights), best meta-val step restored.

Run: ``METAAUTO_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.transfer_movielens`` (a few minutes on CPU);
``--path DIR`` reads another MovieLens 'latest' directory.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from metaauto.backbones import make_backbone
from metaauto.engine import TrainConfig, meta_train
from metaauto.evaluation.recsys import (
    MatrixFactorization,
    evaluate_recsys,
    finetune_predictor,
    format_table,
    global_mean_predictor,
    item_mean_predictor,
    learner_predictor,
    model_predictor,
    support_mean_predictor,
    train_pooled,
)
from metaauto.learners import learner_defaults, make_learner
from metaauto.tasks.movielens import MovieLensCollection

RESULTS = Path(__file__).resolve().parent / "results" / "transfer-movielens.json"


def log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--path", default=None, help="a MovieLens directory with ratings.csv and movies.csv")
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--learners", nargs="*", default=["maml", "anil", "metasgd"])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--train-shots", type=int, default=10)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--meta-steps", type=int, default=300)
    parser.add_argument("--meta-batch-size", type=int, default=16)
    parser.add_argument("--meta-lr", type=float, default=1e-3)
    parser.add_argument("--pooled-epochs", type=int, default=3)
    parser.add_argument("--finetune-steps", type=int, default=10)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--no-warm-start", action="store_true")
    parser.add_argument("--hparam", action="append", default=[], metavar="[LEARNER.]KEY=VALUE",
                        help="override a learner hyperparameter (all learners, or LEARNER's only), e.g. metasgd.eval_inner_steps=1")
    parser.add_argument("--mf-rank", type=int, default=10)
    parser.add_argument("--mf-reg", type=float, default=5.0)
    parser.add_argument("--item-factors", type=int, default=0,
                        help="add rank-r MF item factors (meta-train ratings only) to the item features")
    parser.add_argument("--eval-split", default="test", choices=["val", "test"],
                        help="users scored: 'val' to choose settings without looking at the meta-test users")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    collection = MovieLensCollection(args.data_dir, path=args.path, split_seed=args.seed, item_factors=args.item_factors)
    log(f"movielens from {collection.directory}: " + ", ".join(
        f"{k} {v.units} users / {v.examples} ratings" for k, v in collection.summary().items()))
    shape = collection.input_shape

    def backbone():
        return make_backbone("mlp", shape, 1, hidden=args.hidden)

    pooled_data = collection.pooled("train")
    pooled = train_pooled(backbone(), pooled_data.x, pooled_data.y, epochs=args.pooled_epochs, seed=args.seed)
    log(f"pooled MLP trained ({time.perf_counter() - started:.0f}s)")
    users, items, ratings = collection.train_triples()
    mf = MatrixFactorization(rank=args.mf_rank, reg=args.mf_reg, seed=args.seed).fit(
        users, items, ratings, n_items=len(collection.item_ids))
    log(f"matrix factorisation fitted ({time.perf_counter() - started:.0f}s)")

    predictors = {
        "global mean": global_mean_predictor(collection.global_mean),
        "item mean": item_mean_predictor(collection.item_stats["mean"].to_numpy()),
        "user support mean": support_mean_predictor(),
        "pooled MLP": model_predictor(pooled),
        "pooled MLP + fine-tune": finetune_predictor(pooled, steps=args.finetune_steps, lr=args.finetune_lr),
        "MF fold-in": mf.predictor(),
    }
    training = {}
    for name in args.learners:
        model = backbone()
        if not args.no_warm_start:
            model.load_state_dict(copy.deepcopy(pooled.state_dict()))
        hparams = dict(learner_defaults(name, "regression"))
        for item in args.hparam:
            key, _, value = item.partition("=")
            target, _, key = key.rpartition(".")
            if target in ("", name):
                hparams[key] = json.loads(value)
        learner = make_learner(name, model, **hparams)
        config = TrainConfig(
            ways=None, shots=args.train_shots, queries=args.queries, meta_batch_size=args.meta_batch_size,
            meta_steps=args.meta_steps, meta_lr=args.meta_lr, val_every=max(1, args.meta_steps // 5), val_tasks=64,
            seed=args.seed, device="cpu", progress=False,
        )
        t0 = time.perf_counter()
        result = meta_train(learner, collection, config)
        result.learner.eval()
        training[name] = {"seconds": round(time.perf_counter() - t0, 1), "best_step": result.best_step,
                          "final_step": result.final_step, "hparams": result.learner.hparams()}
        predictors[f"{name} (meta-learned)"] = learner_predictor(result.learner)
        log(f"{name} meta-trained in {training[name]['seconds']}s, best step {result.best_step}")

    per_k = []
    for shots in args.shots:
        episodes = collection.user_episodes(args.eval_split, shots=shots, seed=args.seed)
        per_k.append((shots, evaluate_recsys(episodes, predictors, seed=args.seed)))
        log(f"K={shots}: {len(episodes)} meta-{args.eval_split} users evaluated ({time.perf_counter() - started:.0f}s)")

    table = format_table(per_k)
    print(table)
    out = {
        "dataset": str(collection.directory),
        "splits": {k: {"users": v.units, "ratings": v.examples} for k, v in collection.summary().items()},
        "features": collection.feature_cols,
        "args": vars(args),
        "training": training,
        "results": {
            str(shots): {
                "users": res.users,
                "metrics": {m: {k: {"mean": v[0], "ci95": v[1]} for k, v in s.items()} for m, s in res.summary().items()},
            }
            for shots, res in per_k
        },
        "table": table,
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2, default=str))
    log(f"wrote {args.output} ({out['seconds']}s)")
    return out


if __name__ == "__main__":
    main()
