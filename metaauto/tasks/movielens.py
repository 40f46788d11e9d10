"""MovieLens cold start: each user is a regression task (predict their ratings from K of them).

The loader reads the ``ratings.csv``/``movies.csv`` (and optional ``tags.csv``) format of the MovieLens
"latest" releases from any directory, so ``ml-latest-small`` and a full ``ml-latest`` download work the
same way. Users, never ratings, are split into meta-train/val/test by a seeded shuffle.

Every rating row becomes one example whose features describe the *item* (MeLU, Lee et al. KDD 2019,
minus the user demographics that these releases do not have): genres (multi-hot), release year parsed
from the title, counts of the most frequent tags, and the item's popularity and damped mean rating.
Everything computed from other people's behaviour (popularity, mean rating, tags, the tag vocabulary,
the global mean) uses *meta-train users only*, and standardisation (in :class:`TableCollection`) uses
meta-train rows only, so no meta-val/test user shapes what the model sees. The user enters only through
adaptation on their K support ratings.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from metaauto.config import data_dir as resolve_data_dir
from metaauto.errors import CollectionError
from metaauto.tasks.base import SPLITS
from metaauto.tasks.table import DEFAULT_FRACTIONS, TableCollection

DEFAULT_SUBDIR = Path("movielens") / "ml-latest-small"
REQUIRED = {
    "ratings.csv": ("userId", "movieId", "rating"),
    "movies.csv": ("movieId", "title", "genres"),
}
TAG_COLUMNS = ("userId", "movieId", "tag")
NO_GENRES = "(no genres listed)"
#: pseudo-count pulling an item's mean rating towards the global mean (items with few ratings)
ITEM_MEAN_DAMPING = 5.0
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def resolve_movielens_dir(data_dir: str | os.PathLike | None = None, path: str | os.PathLike | None = None) -> Path:
    """``path`` if given; else ``data_dir`` itself when it holds ``ratings.csv``, else ``data_dir/movielens/ml-latest-small``."""
    if path is not None:
        directory = Path(path).expanduser()
    else:
        base = resolve_data_dir(data_dir)
        directory = base if (base / "ratings.csv").is_file() else base / DEFAULT_SUBDIR
    if not directory.is_dir():
        raise CollectionError(f"MovieLens directory {directory} does not exist (expected ratings.csv and movies.csv in it)")
    return directory


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise CollectionError(f"MovieLens file {path} is missing; the directory needs {', '.join(REQUIRED)}")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise CollectionError(f"cannot read MovieLens file {path}: {exc}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CollectionError(f"{path}: missing column(s) {missing}; columns are {[str(c) for c in frame.columns]}")
    return frame


def read_movielens(directory: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """``(ratings, movies, tags or None)``, validated; errors name the file and the column."""
    directory = Path(directory)
    ratings = _read_csv(directory / "ratings.csv", REQUIRED["ratings.csv"])
    movies = _read_csv(directory / "movies.csv", REQUIRED["movies.csv"])
    path = directory / "ratings.csv"
    if len(ratings) == 0:
        raise CollectionError(f"{path}: no ratings")
    for column in REQUIRED["ratings.csv"]:
        if not pd.api.types.is_numeric_dtype(ratings[column]) or ratings[column].isna().any():
            raise CollectionError(f"{path}: column {column!r} must be numeric with no missing values")
    if not np.isfinite(ratings["rating"].to_numpy(dtype=np.float64)).all():
        raise CollectionError(f"{path}: column 'rating' has infinite values")
    unknown = ~ratings["movieId"].isin(movies["movieId"])
    if unknown.any():
        raise CollectionError(
            f"{path}: movieId {ratings['movieId'][unknown].iloc[0].item()!r} (column 'movieId') is not in {directory / 'movies.csv'}"
        )
    tags = None
    if (directory / "tags.csv").is_file():
        tags = _read_csv(directory / "tags.csv", TAG_COLUMNS)
    ratings = ratings[list(REQUIRED["ratings.csv"])].copy()
    ratings["rating"] = ratings["rating"].astype(np.float32)
    return ratings, movies, tags


def split_users(users: np.ndarray, fractions=DEFAULT_FRACTIONS, seed: int = 0) -> dict[str, list[Any]]:
    """A seeded shuffle of the users cut by ``fractions`` (train, val, test); every split non-empty."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise CollectionError(f"movielens: fractions must be three positive numbers summing to 1, got {fractions}")
    n = len(users)
    sizes = [max(1, round(f * n)) for f in fractions[1:]]
    if n - sum(sizes) < 1:
        raise CollectionError(f"movielens: {n} users are too few for fractions {fractions}")
    order = np.random.default_rng(seed).permutation(np.sort(users))
    cuts = np.cumsum([n - sum(sizes), sizes[0]])
    return {split: part.tolist() for split, part in zip(SPLITS, np.split(order, cuts))}


@dataclass(frozen=True)
class UserEpisode:
    """One meta-test user: K support ratings and *all* their other ratings as the query."""

    user: Any
    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    support_items: np.ndarray  # item codes (see ``MovieLensCollection.item_ids``)
    query_items: np.ndarray


class MovieLensCollection(TableCollection):
    """Users as regression tasks over item features; see the module docstring for the features.

    Parameters: ``data_dir`` (the shared data root, or a directory holding ``ratings.csv`` itself),
    ``path`` (an explicit MovieLens directory, wins over ``data_dir``), ``fractions``/``split_seed`` (the
    user split), ``top_tags`` (how many of the most frequent meta-train tags become count features),
    ``too_small`` (as in :class:`TableCollection`; default ``"skip"`` so users with fewer than
    ``shots + queries`` ratings sit out of that episode size rather than failing it), ``item_factors``
    (default 0: none; ``r > 0`` adds the item factors and bias of a rank-``r`` matrix factorisation fitted
    on meta-train ratings as features ``f_mf*``: the collaborative signal MF fold-in uses, for a model
    that otherwise only sees item content and popularity).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        path: str | os.PathLike | None = None,
        fractions=DEFAULT_FRACTIONS,
        split_seed: int = 0,
        top_tags: int = 20,
        too_small: str = "skip",
        item_factors: int = 0,
    ) -> None:
        directory = resolve_movielens_dir(data_dir, path)
        ratings, movies, tags = read_movielens(directory)
        self.directory = directory
        users = ratings["userId"].unique()
        user_splits = split_users(users, fractions, split_seed)
        train_users = set(user_splits["train"])
        if int(item_factors) < 0:
            raise CollectionError(f"movielens: item_factors must be 0 (none) or a positive rank, got {item_factors!r}")
        frame, self.item_stats = build_features(ratings, movies, tags, train_users, top_tags, int(item_factors), split_seed)
        super().__init__(
            frame,
            task_col="userId",
            label_col="rating",
            feature_cols=[c for c in frame.columns if c.startswith("f_")],
            task_type="regression",
            splits=user_splits,
            standardize=True,
            too_small=too_small,
            name="movielens",
            source=str(directory / "ratings.csv"),
        )
        self.global_mean = float(self.item_stats.attrs["global_mean"])
        self.item_ids = self.item_stats.index.to_numpy()
        code_of = pd.Series(np.arange(len(self.item_ids)), index=self.item_ids)
        self._item_codes = code_of.loc[frame["movieId"].to_numpy()].to_numpy()
        self._fingerprint = f"{self._fingerprint}-t{top_tags}" + (f"-mf{int(item_factors)}" if item_factors else "")

    # -- evaluation views --------------------------------------------------------------------------

    def _rows_of(self, split: str) -> dict[int, np.ndarray]:
        rows = self._split_rows[split]
        codes = self._task_codes[rows]
        order = np.argsort(codes, kind="stable")
        rows, codes = rows[order], codes[order]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        return {int(codes[s]): part for s, part in zip(starts, np.split(rows, starts[1:]))}

    def user_episodes(self, split: str = "test", shots: int = 10, seed: int = 0, min_query: int = 1) -> list[UserEpisode]:
        """Every user of ``split`` with at least ``shots + min_query`` ratings, one episode each.

        The support is a seeded random draw of ``shots`` ratings; the query is all the user's others.
        """
        self._check_split(self.name, split)
        rng = self._rng(seed, split)
        episodes = []
        for task, rows in sorted(self._rows_of(split).items()):
            if len(rows) < shots + min_query:
                continue
            perm = rng.permutation(rows)
            s, q = perm[:shots], perm[shots:]
            episodes.append(
                UserEpisode(
                    user=self.task_names[task],
                    support_x=torch.from_numpy(self._x[s]),
                    support_y=torch.from_numpy(self._y[s]),
                    query_x=torch.from_numpy(self._x[q]),
                    query_y=torch.from_numpy(self._y[q]),
                    support_items=self._item_codes[s],
                    query_items=self._item_codes[q],
                )
            )
        if not episodes:
            raise CollectionError(f"movielens: no user in split {split!r} has {shots + min_query} ratings")
        return episodes

    def train_triples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(user code, item code, rating)`` of every meta-train rating, for matrix factorisation."""
        rows = self._split_rows["train"]
        return self._task_codes[rows], self._item_codes[rows], self._y[rows, 0]


def build_features(
    ratings: pd.DataFrame, movies: pd.DataFrame, tags: pd.DataFrame | None, train_users: set, top_tags: int,
    item_factors: int = 0, seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-rating feature frame (``f_*`` columns) and the per-item statistics, from meta-train users only."""
    movies = movies.drop_duplicates("movieId").set_index("movieId")
    items = np.sort(ratings["movieId"].unique())
    movies = movies.loc[items]
    in_train = ratings["userId"].isin(train_users).to_numpy()
    train = ratings[in_train]
    global_mean = float(train["rating"].mean())
    grouped = train.groupby("movieId")["rating"].agg(["count", "sum"]).reindex(items, fill_value=0)
    stats = pd.DataFrame(index=pd.Index(items, name="movieId"))
    stats["count"] = grouped["count"].astype(np.float64)
    stats["mean"] = (grouped["sum"] + ITEM_MEAN_DAMPING * global_mean) / (grouped["count"] + ITEM_MEAN_DAMPING)
    stats.attrs["global_mean"] = global_mean

    feats = pd.DataFrame(index=stats.index)
    genres = movies["genres"].fillna(NO_GENRES).astype(str).str.get_dummies(sep="|")
    for genre in sorted(c for c in genres.columns if c != NO_GENRES):
        feats[f"f_genre_{genre}"] = genres[genre].to_numpy(dtype=np.float64)
    years = movies["title"].astype(str).str.extract(_YEAR)[0].astype(float)
    known_years = years[stats["count"] > 0].dropna()
    fill = float(known_years.median()) if len(known_years) else 2000.0
    feats["f_year"] = years.fillna(fill).to_numpy()
    feats["f_year_missing"] = years.isna().to_numpy(dtype=np.float64)
    feats["f_log_popularity"] = np.log1p(stats["count"].to_numpy())
    feats["f_mean_rating"] = stats["mean"].to_numpy()
    if tags is not None and top_tags > 0:
        t = tags[tags["userId"].isin(train_users)].dropna(subset=["tag"])
        t = t.assign(tag=t["tag"].astype(str).str.lower().str.strip())
        feats["f_log_tag_count"] = np.log1p(t.groupby("movieId").size().reindex(items, fill_value=0).to_numpy())
        vocabulary = t["tag"].value_counts().index[:top_tags]
        counts = t[t["tag"].isin(vocabulary)].groupby(["movieId", "tag"]).size().unstack(fill_value=0)
        counts = counts.reindex(index=items, columns=vocabulary, fill_value=0)
        for i, tag in enumerate(vocabulary):
            feats[f"f_tag{i}_{re.sub(r'[^a-z0-9]+', '_', tag)[:20]}"] = np.log1p(counts[tag].to_numpy())
    if item_factors > 0:
        from metaauto.tasks.factorization import MatrixFactorization  # the same model as the MF fold-in baseline

        item_codes = np.searchsorted(items, train["movieId"].to_numpy())
        mf = MatrixFactorization(rank=item_factors, seed=seed).fit(
            train["userId"].to_numpy(), item_codes, train["rating"].to_numpy(), n_items=len(items))
        for j in range(item_factors):
            feats[f"f_mf{j}"] = mf.Q[:, j]
        feats["f_mf_bias"] = mf.Q[:, -1]
    frame = feats.loc[ratings["movieId"].to_numpy()].reset_index()
    frame.insert(0, "userId", ratings["userId"].to_numpy())
    frame["rating"] = ratings["rating"].to_numpy(dtype=np.float64)
    return frame, stats
