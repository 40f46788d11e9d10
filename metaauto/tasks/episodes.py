"""Vectorised episode sampling shared by the image and table collections.

Every episode needs "k distinct items out of n" many times over (classes out of a split, drawings out of
a class, rows out of a user). Drawing them one episode at a time with ``rng.choice`` costs a Python loop
per task, and the random-keys trick (argsort of ``n`` uniforms) costs memory proportional to the largest
group. Floyd's algorithm needs only ``k`` draws per group, so it is vectorised here across all groups at
once and its cost is independent of the group sizes (a user with 2,000 ratings costs the same as one
with 20).
"""

from __future__ import annotations

import numpy as np


def sample_subsets(rng: np.random.Generator, sizes: np.ndarray, k: int) -> np.ndarray:
    """For each group ``g`` draw ``k`` distinct indices in ``[0, sizes[g])``, in uniformly random order.

    Returns an ``int64`` array of shape ``[len(sizes), k]``. Callers guarantee ``sizes >= k`` (they
    validate it with an error that names the task or class, which this function cannot know).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    groups = sizes.shape[0]
    out = np.empty((groups, k), dtype=np.int64)
    # Floyd: for j = n-k .. n-1 draw t in [0, j]; keep t unless already taken, in which case take j.
    # The result is a uniformly random k-subset; its order is not uniform, hence the shuffle below.
    for i in range(k):
        upper = sizes - k + i
        draw = rng.integers(0, upper + 1)
        taken = (out[:, :i] == draw[:, None]).any(axis=1)
        out[:, i] = np.where(taken, upper, draw)
    order = np.argsort(rng.random((groups, k)), axis=1)
    return np.take_along_axis(out, order, axis=1)


def episode_labels(tasks: int, ways: int, per_class: int) -> np.ndarray:
    """Episode-local labels ``[tasks, ways * per_class]``: ``per_class`` zeros, then ones, ..."""
    return np.broadcast_to(np.repeat(np.arange(ways, dtype=np.int64), per_class), (tasks, ways * per_class))


class RaggedIndex:
    """Row indices grouped into variable-size groups (the rows of a user, of a class within a site).

    Stored flat (``rows`` sorted by group, with ``offsets``/``counts``) so that picking examples for a
    whole meta-batch is one fancy-indexing expression instead of a Python loop over groups.
    """

    def __init__(self, group_of_row: np.ndarray, n_groups: int) -> None:
        group_of_row = np.asarray(group_of_row, dtype=np.int64)
        self.rows = np.argsort(group_of_row, kind="stable")
        self.counts = np.bincount(group_of_row, minlength=n_groups).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def pick(self, rng: np.random.Generator, groups: np.ndarray, k: int) -> np.ndarray:
        """``k`` distinct rows of each group in ``groups`` (any shape); result ``groups.shape + (k,)``."""
        flat = groups.reshape(-1)
        within = sample_subsets(rng, self.counts[flat], k)
        return self.rows[self.offsets[flat][:, None] + within].reshape(*groups.shape, k)
