"""Warm start across collections: a knowledge base of finished studies, searched by meta-features.

As auto-sklearn does for datasets, each collection is described by a few cheap *meta-features* (task
type, ways/shots, input shape and size, how many tasks/classes each split has, the mean/std of a pooled
sample of training inputs and targets). When a study ends, its meta-features, best parameters and best
value are recorded; a new study looks up the ``k`` past studies nearest in meta-feature space (same task
type only: a regression configuration says nothing about classification) and enqueues their best
configurations right after the published defaults, so the search starts from what worked on similar data.

The knowledge base is one SQLite table under ``$METAAUTO_HOME/search/knowledge.db`` -- not the Optuna
storage, which may be a journal file or a remote PostgreSQL. SQLite serialises concurrent writers with
its own file lock; each record is one ``INSERT OR REPLACE`` in a transaction with a generous busy timeout,
so two searches finishing at once both land.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from metaauto.search.space import ALGORITHM, SearchError, SearchSpace
from metaauto.search.storage import search_dir

#: how many past studies a new one borrows from by default
DEFAULT_K = 3
#: study user attribute listing the studies a warm start borrowed from
WARM_ATTR = "metaauto.warm_start"
_POOL = 500
_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study TEXT PRIMARY KEY,
    task_type TEXT NOT NULL,
    features TEXT NOT NULL,
    best_params TEXT NOT NULL,
    best_value REAL NOT NULL,
    recorded_at REAL NOT NULL
)
"""


def meta_features(collection: Any, ways: int | None, shots: int) -> dict[str, Any]:
    """Cheap numeric description of ``collection`` as searched with ``ways``/``shots`` (plus ``task_type``).

    Split sizes come from the collection's summary (0 for unbounded streams such as sinusoid); the
    statistics from at most 500 pooled training examples, so describing Omniglot costs a fraction of a second.
    """
    shape = tuple(int(d) for d in collection.input_shape)
    features: dict[str, Any] = {
        "task_type": collection.task_type,
        "ways": float(ways or 0) if collection.task_type == "classification" else 0.0,
        "shots": float(shots),
        "input_rank": float(len(shape)),
        "input_dims": float(math.prod(shape)),
    }
    try:
        for split, summary in collection.summary().items():
            features[f"{split}.units"] = float(summary.units)
            features[f"{split}.examples"] = float(summary.examples)
    except Exception:  # a collection without a summary is still describable by the rest
        pass
    try:
        pooled = collection.pooled("train", max_examples=_POOL, seed=0)
        x, y = pooled.x.float(), pooled.y.float()
        features["x.mean"], features["x.std"] = float(x.mean()), float(x.std())
        if collection.task_type == "regression":
            features["y.mean"], features["y.std"] = float(y.mean()), float(y.std())
    except Exception:
        pass
    return features


def distance(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """Root mean square of relative differences ``|a-b| / (|a|+|b|)`` over the numeric features both have.

    Relative differences are scale-free (input dims in the thousands weigh like shots in units) and lie
    in [0, 1]; a feature only one side has counts as maximally different. Different task types: ``inf``.
    """
    if a.get("task_type") != b.get("task_type"):
        return math.inf
    keys = sorted((set(a) | set(b)) - {"task_type"})
    if not keys:
        return 0.0
    total = 0.0
    for key in keys:
        if key not in a or key not in b:
            total += 1.0
            continue
        x, y = float(a[key]), float(b[key])
        scale = abs(x) + abs(y)
        total += 0.0 if scale == 0 else ((x - y) / scale) ** 2
    return math.sqrt(total / len(keys))


@dataclass
class PastStudy:
    study: str
    task_type: str
    features: dict[str, Any]
    best_params: dict[str, Any]
    best_value: float
    distance: float = math.nan


class KnowledgeBase:
    """The table of finished studies (see the module docstring)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else search_dir() / "knowledge.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=60)
        except sqlite3.Error as exc:
            raise SearchError(f"cannot open the search knowledge base {self.path}: {exc}") from exc
        return conn

    def record(self, study: str, features: Mapping[str, Any], best_params: Mapping[str, Any], best_value: float) -> None:
        """Insert or replace ``study``'s entry (a resumed study updates its own row)."""
        if not math.isfinite(best_value):
            return
        row = (study, str(features["task_type"]), json.dumps(dict(features), sort_keys=True),
               json.dumps(dict(best_params), sort_keys=True), float(best_value), time.time())
        conn = self._connect()
        try:
            with conn:  # one transaction; SQLite's lock orders concurrent writers
                conn.execute("INSERT OR REPLACE INTO studies VALUES (?, ?, ?, ?, ?, ?)", row)
        finally:
            conn.close()

    def entries(self, task_type: str | None = None) -> list[PastStudy]:
        conn = self._connect()
        try:
            query = "SELECT study, task_type, features, best_params, best_value FROM studies"
            rows = conn.execute(query + (" WHERE task_type = ?" if task_type else ""), (task_type,) if task_type else ()).fetchall()
        finally:
            conn.close()
        return [PastStudy(s, t, json.loads(f), json.loads(p), v) for s, t, f, p, v in rows]

    def nearest(self, features: Mapping[str, Any], k: int = DEFAULT_K, exclude: str | None = None) -> list[PastStudy]:
        """The ``k`` past studies of the same task type closest to ``features``, nearest first."""
        found = []
        for entry in self.entries(str(features["task_type"])):
            if entry.study == exclude:
                continue
            entry.distance = distance(features, entry.features)
            if math.isfinite(entry.distance):
                found.append(entry)
        found.sort(key=lambda e: (e.distance, -e.best_value, e.study))
        return found[:k]


def fit_to_space(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """``params`` as a point of ``space``, or ``None`` where it is not one.

    The algorithm must be allowed; a parameter the user fixed takes the fixed value; every other
    parameter must be present and inside its (possibly narrowed) range or choices -- a configuration is
    never silently clipped into one nobody found good.
    """
    algorithm = params.get(ALGORITHM)
    if algorithm not in space.algorithms:
        return None
    values: dict[str, Any] = {ALGORITHM: algorithm}
    for param in space.own_params(algorithm) + space.shared_params():
        if param.fixed:
            values[param.name] = param.choices[0] if param.kind == "categorical" else param.low
            continue
        if param.name not in params:
            return None
        value = params[param.name]
        if param.kind == "categorical":
            if value not in param.choices:
                return None
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not param.low <= value <= param.high:
            return None
        values[param.name] = value
    return values


def warm_start_configs(space: SearchSpace, past: list[PastStudy], skip: list[Mapping[str, Any]] = ()) -> list[tuple[PastStudy, dict[str, Any]]]:
    """The valid, distinct best configurations of ``past`` (nearest first), none equal to one in ``skip``."""
    seen = [dict(s) for s in skip]
    chosen = []
    for entry in past:
        values = fit_to_space(space, entry.best_params)
        if values is None or values in seen:
            continue
        seen.append(values)
        chosen.append((entry, values))
    return chosen
