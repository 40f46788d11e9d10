"""MovieLens cold-start collection and recommendation evaluation (real data + small generated directories)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from metaauto.backbones import make_backbone
from metaauto.engine import TrainConfig, meta_train
from metaauto.errors import CollectionError
from metaauto.evaluation.recsys import (
    MatrixFactorization,
    evaluate_recsys,
    finetune_predictor,
    format_table,
    global_mean_predictor,
    item_mean_predictor,
    learner_predictor,
    model_predictor,
    ndcg_at_k,
    support_mean_predictor,
    train_pooled,
)
from metaauto.learners import learner_defaults, make_learner
from metaauto.tasks.movielens import MovieLensCollection
from metaauto.tasks.catalog import load_collection


def write_movielens(directory, users=30, items=40, per_user=25, seed=0, tags=True):
    """A small MovieLens-format directory with user taste x item quality structure."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    genres = ["Action", "Comedy", "Drama", "Sci-Fi"]
    movies = pd.DataFrame({
        "movieId": np.arange(1, items + 1) * 10,
        "title": [f"Movie {i} ({1980 + i % 30})" if i % 7 else f"Movie {i}" for i in range(items)],
        "genres": ["|".join(g for j, g in enumerate(genres) if (i >> j) & 1) or "(no genres listed)" for i in range(items)],
    })
    quality = rng.normal(0, 0.7, items)
    rows = []
    for u in range(1, users + 1):
        bias = rng.normal(0, 0.5)
        for i in rng.choice(items, per_user, replace=False):
            rows.append((u, int(movies.movieId[i]), float(np.clip(np.round((3.5 + bias + quality[i]) * 2) / 2, 0.5, 5))))
    pd.DataFrame(rows, columns=["userId", "movieId", "rating"]).assign(timestamp=0).to_csv(directory / "ratings.csv", index=False)
    movies.to_csv(directory / "movies.csv", index=False)
    if tags:
        pd.DataFrame({"userId": [1, 2, 3, 29, 30], "movieId": [10, 10, 20, 30, 30], "tag": ["fun", "Fun", "dark", "secret", "secret"],
                      "timestamp": 0}).to_csv(directory / "tags.csv", index=False)
    return directory


@pytest.fixture(scope="module")
def real(data_dir):
    return load_collection("movielens", data_dir)


def test_real_data_splits_are_disjoint_users(real):
    train, val, test = (set(real.tasks_of(s)) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train) + len(val) + len(test) == 610
    ratings = pd.read_csv(real.directory / "ratings.csv")
    assert sum(v.examples for v in real.summary().values()) == len(ratings)
    batch = real.sample("train", shots=5, queries=10, tasks=4, seed=1)
    assert batch.support_x.shape == (4, 5, real.input_shape[0]) and batch.query_y.shape == (4, 10, 1)
    episodes = real.user_episodes("test", shots=20)
    assert {e.user for e in episodes} <= test
    for e in episodes[:5]:  # query = all other ratings of that user
        assert len(e.support_y) + len(e.query_y) == int((ratings.userId == e.user).sum())


def test_item_statistics_use_meta_train_users_only(tmp_path):
    """Changing every meta-test user's ratings and tags leaves features and item statistics unchanged."""
    base = write_movielens(tmp_path / "a")
    first = MovieLensCollection(path=base, split_seed=3)
    held_out = set(first.tasks_of("val")) | set(first.tasks_of("test"))
    ratings = pd.read_csv(base / "ratings.csv")
    tags = pd.read_csv(base / "tags.csv")
    changed = write_movielens(tmp_path / "b")
    ratings.loc[ratings.userId.isin(held_out), "rating"] = 0.5
    ratings.to_csv(changed / "ratings.csv", index=False)
    tags.loc[tags.userId.isin(held_out), "tag"] = "leak"
    tags.to_csv(changed / "tags.csv", index=False)
    second = MovieLensCollection(path=changed, split_seed=3)
    assert second.tasks_of("test") == first.tasks_of("test")
    pd.testing.assert_frame_equal(first.item_stats, second.item_stats)
    assert first.global_mean == second.global_mean
    assert not any("leak" in c for c in second.feature_cols)
    np.testing.assert_array_equal(first._x, second._x)  # features and their standardisation too
    assert (second._y[second._split_rows["test"]] == 0.5).all()  # while the held-out labels did change


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(CollectionError, match="does not exist"):
        MovieLensCollection(path=tmp_path / "nowhere")
    d = write_movielens(tmp_path / "d", tags=False)
    (d / "movies.csv").unlink()
    with pytest.raises(CollectionError, match="movies.csv is missing"):
        MovieLensCollection(path=d)
    d = write_movielens(tmp_path / "e")
    pd.read_csv(d / "ratings.csv").drop(columns="rating").to_csv(d / "ratings.csv", index=False)
    with pytest.raises(CollectionError, match=r"ratings.csv: missing column\(s\) \['rating'\]"):
        MovieLensCollection(path=d)
    d = write_movielens(tmp_path / "f")
    pd.read_csv(d / "tags.csv").drop(columns="tag").to_csv(d / "tags.csv", index=False)
    with pytest.raises(CollectionError, match=r"tags.csv: missing column\(s\) \['tag'\]"):
        MovieLensCollection(path=d)
    d = write_movielens(tmp_path / "g")
    r = pd.read_csv(d / "ratings.csv")
    r.loc[0, "movieId"] = 99999
    r.to_csv(d / "ratings.csv", index=False)
    with pytest.raises(CollectionError, match="movieId 99999"):
        MovieLensCollection(path=d)


def test_ndcg_and_mf_fold_in():
    assert ndcg_at_k(np.array([3, 2, 1.0]), np.array([5, 4, 1.0])) == pytest.approx(1.0)
    assert ndcg_at_k(np.array([1, 2, 3.0]), np.array([5, 4, 1.0])) < 1.0
    # exact low-rank ratings: fold-in from a few ratings recovers a new user's row
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(50, 2)), rng.normal(size=(30, 2))
    full = 3 + p @ q.T
    users, items = np.meshgrid(np.arange(49), np.arange(30), indexing="ij")
    mf = MatrixFactorization(rank=2, reg=0.01, iterations=30).fit(users.ravel(), items.ravel(), full[:49].ravel(), 30)
    pu = mf.fold_in(np.arange(10), full[49, :10])
    pred = mf.mu + mf.Q[10:, -1] + mf.Q[10:, :-1] @ pu[:-1] + pu[-1]
    assert np.abs(pred - full[49, 10:]).max() < 0.1


def test_end_to_end_small_transfer(tmp_path):
    torch.manual_seed(0)
    collection = MovieLensCollection(path=write_movielens(tmp_path / "ml"), split_seed=0)
    pooled_data = collection.pooled("train")
    pooled = train_pooled(make_backbone("mlp", collection.input_shape, 1, hidden=[16]), pooled_data.x, pooled_data.y, epochs=5)
    users, items, ratings = collection.train_triples()
    mf = MatrixFactorization(rank=3, iterations=5).fit(users, items, ratings, len(collection.item_ids))
    learner = make_learner("maml", make_backbone("mlp", collection.input_shape, 1, hidden=[16]), **learner_defaults("maml", "regression"))
    config = TrainConfig(ways=None, shots=5, queries=5, meta_batch_size=4, meta_steps=5, val_every=5, val_tasks=4,
                         device="cpu", progress=False)
    result = meta_train(learner, collection, config)
    predictors = {
        "global mean": global_mean_predictor(collection.global_mean),
        "item mean": item_mean_predictor(collection.item_stats["mean"].to_numpy()),
        "support mean": support_mean_predictor(),
        "pooled": model_predictor(pooled),
        "pooled + fine-tune": finetune_predictor(pooled, steps=3),
        "mf": mf.predictor(),
        "maml": learner_predictor(result.learner),
    }
    episodes = collection.user_episodes("test", shots=5)
    assert len(episodes) == len(collection.tasks_of("test"))
    out = evaluate_recsys(episodes, predictors)
    summary = out.summary()
    assert set(summary) == set(predictors)
    for metrics in summary.values():
        assert 0 <= metrics["mae"][0] <= metrics["rmse"][0] <= 4.5 and 0 < metrics["ndcg@10"][0] <= 1
    # structure in the data: the item mean beats the global mean
    assert summary["item mean"]["mae"][0] < summary["global mean"]["mae"][0]
    assert "| 5 | maml |" in format_table([(5, out)])
