"""Biased matrix factorisation with fold-in, on rating triples.

It lives with the tasks because the MovieLens collection derives item features from its item factors
(:func:`metaauto.tasks.movielens`); the cold-start evaluation (:mod:`metaauto.evaluation.recsys`) uses
the same model as its MF fold-in baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class MatrixFactorization:
    """Biased MF ``r = mu + b_u + b_i + p_u . q_i`` fitted by alternating least squares.

    Trained on meta-train users' ratings only; a new user is *folded in* from their K ratings by ridge
    regression of ``r - mu - b_i`` on ``[q_i, 1]`` (user factors and bias), the item side fixed. Items
    never rated in meta-train have ``q_i = 0, b_i = 0``.
    """

    rank: int = 10
    reg: float = 5.0
    iterations: int = 10
    seed: int = 0

    def fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_items: int) -> "MatrixFactorization":
        rng = np.random.default_rng(self.seed)
        ratings = ratings.astype(np.float64)
        self.mu = float(ratings.mean())
        u_codes, users = np.unique(users, return_inverse=True)
        n_users = len(u_codes)
        P = rng.normal(0, 0.1, (n_users, self.rank + 1))  # last column: user bias
        Q = rng.normal(0, 0.1, (n_items, self.rank + 1))  # last column: item bias
        by_user = _group(users, n_users)
        by_item = _group(items, n_items)
        r = ratings - self.mu
        for _ in range(self.iterations):
            # users: r - b_i = [p_u, b_u] . [q_i, 1]
            design_q = np.c_[Q[:, :-1], np.ones(n_items)]
            for u, rows in enumerate(by_user):
                P[u] = _ridge(design_q[items[rows]], r[rows] - Q[items[rows], -1], self.reg)
            design_p = np.c_[P[:, :-1], np.ones(n_users)]
            for i, rows in enumerate(by_item):
                if len(rows):
                    Q[i] = _ridge(design_p[users[rows]], r[rows] - P[users[rows], -1], self.reg)
                else:
                    Q[i] = 0.0
        self.Q = Q
        return self

    def fold_in(self, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        design = np.c_[self.Q[items, :-1], np.ones(len(items))]
        return _ridge(design, np.asarray(ratings, dtype=np.float64) - self.mu - self.Q[items, -1], self.reg)

    def predictor(self) -> Callable[[Any], np.ndarray]:
        """Predicted query ratings of a user episode, folded in from its support ratings (the MF baseline)."""
        def predict(ep) -> np.ndarray:
            p = self.fold_in(ep.support_items, ep.support_y.numpy().ravel())
            q = self.Q[ep.query_items]
            return self.mu + q[:, -1] + q[:, :-1] @ p[:-1] + p[-1]

        return predict


def _group(codes: np.ndarray, n: int) -> list[np.ndarray]:
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n)]


def _ridge(a: np.ndarray, b: np.ndarray, reg: float) -> np.ndarray:
    return np.linalg.solve(a.T @ a + reg * np.eye(a.shape[1]), a.T @ b)
