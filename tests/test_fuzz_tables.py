"""Property-based fuzzing of table ingest: any table is either a collection that samples finite episodes, or
a CollectionError naming what is wrong -- never another exception (issue: nothing silent, nothing raw).

Seeded (``derandomize``), so CI sees the same few hundred tables every run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from metaauto.errors import CollectionError
from metaauto.tasks import TableCollection

EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])

_cell = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-10**6, 10**6), st.none(),
                  st.sampled_from(["abc", "", " ", "1.5", " 2 ", "n/a", "1e400", "-0"]))
PERTURBATIONS = ("none", "text-cell", "nan-cell", "inf-cell", "none-cell", "missing-task", "missing-label",
                 "text-column", "date-column", "bool-column", "object-numbers", "one-task", "one-class",
                 "float-labels", "string-labels", "constant-feature", "huge-values", "random-cells", "no-features")


@st.composite
def tables(draw: st.DrawFn) -> pd.DataFrame:
    """A valid table (tasks x classes x rows, numeric features), then one perturbation of it.

    Most tables ingest and sample, so the happy path is fuzzed too; the perturbations reach each refusal.
    """
    tasks = draw(st.integers(3, 8))
    classes = draw(st.integers(2, 4))
    per_class = draw(st.integers(1, 6))
    features = draw(st.integers(1, 4))
    rows = tasks * classes * per_class
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    frame = pd.DataFrame({
        "task": np.repeat([f"t{i}" for i in range(tasks)], classes * per_class),
        "label": np.tile(np.repeat(np.arange(classes), per_class), tasks),
        **{f"f{j}": rng.normal(size=rows) * draw(st.sampled_from([1e-3, 1.0, 1e3])) for j in range(features)},
    })
    kind = draw(st.sampled_from(PERTURBATIONS))
    row = draw(st.integers(0, rows - 1))
    col = f"f{draw(st.integers(0, features - 1))}"
    if kind in ("text-cell", "nan-cell", "inf-cell", "none-cell"):
        frame[col] = frame[col].astype(object)
        frame.loc[row, col] = {"text-cell": draw(st.sampled_from(["abc", "n/a", "1,5", "--"])), "nan-cell": np.nan,
                               "inf-cell": -np.inf, "none-cell": None}[kind]
    elif kind == "missing-task":
        frame.loc[row, "task"] = None
    elif kind == "missing-label":
        frame["label"] = frame["label"].astype(object)
        frame.loc[row, "label"] = None
    elif kind == "text-column":
        frame["city"] = draw(st.lists(st.text(max_size=4), min_size=rows, max_size=rows))
    elif kind == "date-column":
        frame["seen"] = pd.date_range("2026-01-01", periods=rows, freq="h")
    elif kind == "bool-column":
        frame["flag"] = rng.random(rows) > 0.5
    elif kind == "object-numbers":
        frame[col] = frame[col].map(lambda v: f" {v:.3f} ").astype(object)
    elif kind == "one-task":
        frame["task"] = "t0"
    elif kind == "one-class":
        frame["label"] = 0
    elif kind == "float-labels":
        frame["label"] = rng.normal(size=rows)
    elif kind == "string-labels":
        frame["label"] = frame["label"].map(lambda v: f"class-{v}")
    elif kind == "constant-feature":
        frame[col] = 7.0
    elif kind == "huge-values":
        frame[col] = frame[col] * 1e300
    elif kind == "random-cells":
        frame[col] = pd.Series(draw(st.lists(_cell, min_size=rows, max_size=rows)), dtype=object)
    elif kind == "no-features":
        frame = frame[["task", "label"]]
    event(f"perturbation: {kind}")
    return frame


def _ingest(data, ways: int, shots: int, queries: int) -> None:
    try:
        coll = TableCollection(data, task_col="task", label_col="label", fractions=(0.5, 0.25, 0.25))
    except CollectionError as exc:
        assert str(exc) and "\n" not in str(exc)
        event(f"refused: {str(exc).split(': ', 1)[-1][:40]}")
        return
    event(f"ingested ({coll.task_type})")
    assert len(coll.feature_cols) >= 1
    for split in ("train", "val", "test"):
        try:
            batch = coll.sample(split, ways=ways, shots=shots, queries=queries, tasks=2, seed=0)
        except CollectionError as exc:
            assert str(exc)
            continue
        event("sampled")
        assert torch.isfinite(batch.support_x).all() and torch.isfinite(batch.query_x).all()
        if coll.task_type == "regression":
            assert torch.isfinite(batch.support_y).all()


@FUZZ
@given(frame=tables(), ways=st.integers(2, 3), shots=st.integers(1, 3), queries=st.integers(1, 2))
def test_any_dataframe_is_a_collection_or_a_collection_error(frame: pd.DataFrame, ways: int, shots: int, queries: int) -> None:
    _ingest(frame, ways, shots, queries)


@FUZZ
@given(frame=tables(), ways=st.integers(2, 3), shots=st.integers(1, 2))
def test_any_csv_file_is_a_collection_or_a_collection_error(tmp_path: Path, frame: pd.DataFrame, ways: int, shots: int) -> None:
    path = tmp_path / "fuzz.csv"
    frame.to_csv(path, index=False)
    _ingest(path, ways, shots, 1)


@FUZZ
@given(data=st.binary(max_size=512))
def test_any_bytes_as_a_csv_file_are_a_collection_or_a_collection_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bytes.csv"
    path.write_bytes(data)
    _ingest(path, 2, 1, 1)
