"""Tabular data where one column names the task (a user, a site, a hospital).

The collection works in three separate stages so that dataset-specific collections (MovieLens users,
heart-disease sites) can reuse any of them: :func:`read_table` turns a path or DataFrame into a frame;
the constructor validates columns, assigns whole tasks to splits and prepares features
(:func:`fit_standardization`); :class:`RaggedIndex` then samples episodes from pre-grouped row indices, with no
pandas in the per-step path.

Conventions, all documented on :class:`TableCollection`:

* ``task_type`` is inferred from the label column when not given: a floating-point label is regression,
  anything else (integers, booleans, strings, categories) is classification.
* Splits are by task, never by row, so no user or site is seen in two splits.
* Features are standardised with the mean and standard deviation of the *meta-train rows only*;
  meta-val/test statistics would leak information about held-out tasks into training.
* A task that cannot serve a requested episode (a class with fewer than ``shots + queries`` rows, fewer
  than ``ways`` classes, fewer than ``shots + queries`` rows for regression) is an error by default,
  naming the task and class; ``too_small="skip"`` leaves such tasks (and, for classification, such
  classes) out of that request and errors only when no task of the split remains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from metaauto.errors import CollectionError
from metaauto.tasks.base import SPLITS, PooledData, SplitSummary, TaskCollection
from metaauto.tasks.batch import TaskBatch, TaskType
from metaauto.tasks.episodes import RaggedIndex, episode_labels, sample_subsets
from metaauto.tasks.validation import check_episode

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
logger = logging.getLogger(__name__)


def read_table(data: pd.DataFrame | str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """The frame and a label for error messages (the file path, or ``"DataFrame"``)."""
    if isinstance(data, pd.DataFrame):
        return data, "DataFrame"
    path = Path(data)
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise CollectionError(f"{path}: unsupported table file type {path.suffix!r}; use .csv or .parquet")
    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # missing/unreadable file, parse errors, Arrow errors
        raise CollectionError(f"cannot read table {path}: {exc}") from exc
    return frame, str(path)


@dataclass(frozen=True)
class Standardization:
    """Per-feature ``(x - mean) / std`` fitted on meta-train rows; constant features keep ``std = 1``."""

    mean: np.ndarray
    std: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


def fit_standardization(x: np.ndarray, fit_rows: np.ndarray) -> Standardization:
    mean = x[fit_rows].mean(axis=0)
    std = x[fit_rows].std(axis=0)
    return Standardization(mean=mean, std=np.where(std > 0, std, 1.0))


def _numeric_cells(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(present, reads as a number)`` per cell of a column of any dtype."""
    present = values.notna().to_numpy()
    parsed = pd.to_numeric(values.astype("string").str.strip(), errors="coerce").notna().to_numpy()
    return present, parsed


def _raise_if_mostly_numeric(frame: pd.DataFrame, column: Any, source: str, task_col: str, shown: int = 3) -> None:
    """A text column whose non-empty cells are mostly numbers is a numeric column with bad cells: say which."""
    values = frame[column]
    present, parsed = _numeric_cells(values)
    bad = present & ~parsed
    if not present.any() or not bad.any() or parsed.sum() < bad.sum():
        return
    rows = np.flatnonzero(bad)
    cells = ", ".join(f"row {frame.index[r]!r} (task {frame[task_col].iloc[r]!r}): {values.iloc[r]!r}" for r in rows[:shown])
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    raise CollectionError(
        f"{source}: feature column {column!r} is numeric except for {len(rows)} cell(s) that are not numbers: "
        f"{cells}{more}; fix or blank them (a blank cell is a missing value), or leave the column out with feature_cols"
    )


def _first_bad_row(frame: pd.DataFrame, bad: np.ndarray, task_col: str) -> str:
    row = int(np.flatnonzero(bad)[0])
    return f"task {frame[task_col].iloc[row]!r}, row {frame.index[row]!r}"


class TableCollection(TaskCollection):
    """Episodes from a table with a task column, feature columns and a label column.

    Parameters
    ----------
    data:
        A DataFrame or a path to a ``.csv``/``.parquet`` file.
    task_col, label_col:
        The column whose values are tasks, and the target.
    feature_cols:
        Input columns; default all numeric columns other than the task, label and split columns.
    task_type:
        ``"classification"`` or ``"regression"``; inferred from the label dtype when ``None``
        (floating point -> regression, anything else -> classification).
    split_col:
        A column holding ``"train"``/``"val"``/``"test"`` per row; all rows of a task must agree.
    splits:
        ``{"train": [tasks...], "val": [...], "test": [...]}``; tasks named nowhere are left out.
    fractions, split_seed:
        When neither of the above is given, a ``split_seed``-seeded shuffle of the tasks is cut into
        train/val/test by these fractions (each non-zero split gets at least one task).
    standardize:
        Standardise features with statistics of the meta-train rows only.
    too_small:
        ``"error"`` (default) or ``"skip"``: what to do with tasks that cannot serve a requested episode.
    name, source:
        Collection name, and the label used in error messages (defaults to the file path); for
        collections built on a prepared DataFrame.
    """

    def __init__(
        self,
        data: pd.DataFrame | str | os.PathLike,
        *,
        task_col: str,
        label_col: str,
        feature_cols: Sequence[str] | None = None,
        task_type: TaskType | None = None,
        split_col: str | None = None,
        splits: Mapping[str, Sequence[Any]] | None = None,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        split_seed: int = 0,
        standardize: bool = True,
        too_small: Literal["error", "skip"] = "error",
        name: str = "table",
        source: str | None = None,
    ) -> None:
        frame, read_from = read_table(data)
        self.name = name
        self.source = source or read_from
        if too_small not in ("error", "skip"):
            raise CollectionError(f"{self.source}: too_small must be 'error' or 'skip', got {too_small!r}")
        self.too_small = too_small
        if len(frame) == 0:
            raise CollectionError(f"{self.source}: the table has no rows")
        self.task_col, self.label_col, self.split_col = task_col, label_col, split_col
        self.feature_cols = self._feature_columns(frame, feature_cols)

        tasks = frame[task_col]
        if tasks.isna().any():
            row = frame.index[int(np.flatnonzero(tasks.isna().to_numpy())[0])]
            raise CollectionError(f"{self.source}: task column {task_col!r} is missing at row {row!r}")
        task_codes, self.task_names = pd.factorize(tasks, sort=True)
        self.task_names = list(self.task_names)

        x = self._features(frame)
        self.task_type = task_type or self._infer_task_type(frame[label_col])
        if self.task_type not in ("classification", "regression"):
            raise CollectionError(f"{self.source}: task_type must be 'classification' or 'regression', got {task_type!r}")
        y, self.class_names = self._labels(frame)

        self.task_split = self._assign_splits(frame, task_codes, splits, fractions, split_seed)
        split_of_row = np.array([self.task_split.get(t, "") for t in range(len(self.task_names))])[task_codes]
        train_rows = np.flatnonzero(split_of_row == "train")
        self.standardization = fit_standardization(x, train_rows) if standardize else None
        self._x = self.standardization.apply(x) if self.standardization else x.astype(np.float32)
        self._y = y
        self._task_codes = task_codes
        self._split_rows = {split: np.flatnonzero(split_of_row == split) for split in SPLITS}
        self.input_shape = (len(self.feature_cols),)
        self.target_dim = 1 if self.task_type == "regression" else None
        self._plans: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._build_groups()
        self._fingerprint = self._digest(frame, fractions, split_seed, standardize)

    # -- validation and preparation -------------------------------------------------------------

    def _feature_columns(self, frame: pd.DataFrame, feature_cols: Sequence[str] | None) -> list[str]:
        reserved = [c for c in (self.task_col, self.label_col, self.split_col) if c is not None]
        for column in [*reserved, *(feature_cols or [])]:
            if column not in frame.columns:
                raise CollectionError(
                    f"{self.source}: column {column!r} not found; columns are {[str(c) for c in frame.columns]}"
                )
        #: columns the default selection left out, with the reason (also in ``summary()["train"].extra``)
        self.excluded_columns: dict[str, str] = {}
        if feature_cols is None:
            columns = []
            for column in (c for c in frame.columns if c not in reserved):
                reason = self._not_a_feature(frame, column)
                if reason is None:
                    columns.append(column)
                else:
                    self.excluded_columns[str(column)] = reason
                    logger.warning("%s: column %r is not used as a feature: %s", self.source, column, reason)
            if not columns:
                raise CollectionError(f"{self.source}: no numeric feature columns besides {reserved}")
            return [str(c) for c in columns]
        for column in feature_cols:
            if column in reserved:
                raise CollectionError(f"{self.source}: column {column!r} cannot be both a feature and the task/label/split column")
            if not pd.api.types.is_numeric_dtype(frame[column]):
                _raise_if_mostly_numeric(frame, column, self.source, self.task_col)
                raise CollectionError(
                    f"{self.source}: feature column {column!r} is not numeric (dtype {frame[column].dtype}); "
                    "encode it first or leave it out of feature_cols"
                )
        if not feature_cols:
            raise CollectionError(f"{self.source}: feature_cols is empty")
        return list(feature_cols)

    def _not_a_feature(self, frame: pd.DataFrame, column: Any) -> str | None:
        """Why the default selection leaves ``column`` out (``None``: it is a feature).

        A numeric column is a feature. A column of text that is numbers except for some cells (one ``abc``
        in a column of measurements makes the whole column text) is an error naming those cells: silently
        dropping it would train on fewer features than the user has. Text, dates and other columns with
        no numeric reading are left out, and the caller logs why.
        """
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values):
            return None
        if pd.api.types.is_datetime64_any_dtype(values) or isinstance(values.dtype, pd.PeriodDtype):
            return f"dates (dtype {values.dtype}); derive numeric features from it and pass feature_cols"
        present, parsed = _numeric_cells(values)
        if present.any() and parsed[present].all():
            return None  # numbers held as text or objects (a DataFrame built by hand, a string column in Parquet)
        _raise_if_mostly_numeric(frame, column, self.source, self.task_col)
        example = values.dropna()
        shown = f" (e.g. {example.iloc[0]!r})" if len(example) else ""
        return f"not numeric{shown}; encode it and pass feature_cols to use it"

    def _features(self, frame: pd.DataFrame) -> np.ndarray:
        x = frame[self.feature_cols].to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(x)
        if not finite.all():
            column = int(np.flatnonzero(~finite.all(axis=0))[0])
            where = _first_bad_row(frame, ~finite[:, column], self.task_col)
            raise CollectionError(
                f"{self.source}: feature column {self.feature_cols[column]!r} has a missing or infinite value "
                f"(first at {where}); impute or drop such rows first"
            )
        return x

    @staticmethod
    def _infer_task_type(labels: pd.Series) -> TaskType:
        return "regression" if pd.api.types.is_float_dtype(labels) else "classification"

    def _labels(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[Any] | None]:
        labels = frame[self.label_col]
        missing = labels.isna().to_numpy()
        if missing.any():
            raise CollectionError(
                f"{self.source}: label column {self.label_col!r} is missing at {_first_bad_row(frame, missing, self.task_col)}"
            )
        if self.task_type == "classification":
            codes, classes = pd.factorize(labels, sort=True)
            return codes.astype(np.int64), list(classes)
        if not pd.api.types.is_numeric_dtype(labels):
            raise CollectionError(f"{self.source}: regression label column {self.label_col!r} is not numeric (dtype {labels.dtype})")
        y = labels.to_numpy(dtype=np.float64)
        if not np.isfinite(y).all():
            raise CollectionError(
                f"{self.source}: label column {self.label_col!r} is infinite at {_first_bad_row(frame, ~np.isfinite(y), self.task_col)}"
            )
        return y.astype(np.float32).reshape(-1, 1), None

    def _assign_splits(
        self,
        frame: pd.DataFrame,
        task_codes: np.ndarray,
        splits: Mapping[str, Sequence[Any]] | None,
        fractions: Sequence[float],
        split_seed: int,
    ) -> dict[int, str]:
        """Task code -> split, checked so that no task lands in two splits and no split is empty."""
        if splits is not None and self.split_col is not None:
            raise CollectionError(f"{self.source}: give either split_col or splits, not both")
        code_of = {name: code for code, name in enumerate(self.task_names)}
        assignment: dict[int, str] = {}
        if self.split_col is not None:
            values = frame[self.split_col].astype("string")
            unknown = ~values.isin(SPLITS).fillna(False).to_numpy(dtype=bool)
            if unknown.any():
                row = int(np.flatnonzero(unknown)[0])
                raise CollectionError(
                    f"{self.source}: split column {self.split_col!r} has value {frame[self.split_col].iloc[row]!r} "
                    f"at row {frame.index[row]!r}; expected one of {SPLITS}"
                )
            pairs = pd.DataFrame({"task": task_codes, "split": values.to_numpy()}).drop_duplicates()
            leaking = pairs[pairs["task"].duplicated(keep=False)]
            if len(leaking):
                task = int(leaking["task"].iloc[0])
                seen = sorted(leaking.loc[leaking["task"] == task, "split"])
                raise CollectionError(
                    f"{self.source}: task {self.task_names[task]!r} has rows in splits {seen} "
                    f"(column {self.split_col!r}); a task must belong to exactly one split"
                )
            assignment = dict(zip(pairs["task"].tolist(), pairs["split"].tolist()))
        elif splits is not None:
            for split, members in splits.items():
                if split not in SPLITS:
                    raise CollectionError(f"{self.source}: unknown split {split!r} in splits; expected {SPLITS}")
                for task in members:
                    if task not in code_of:
                        raise CollectionError(f"{self.source}: task {task!r} of split {split!r} is not in column {self.task_col!r}")
                    if code_of[task] in assignment and assignment[code_of[task]] != split:
                        raise CollectionError(
                            f"{self.source}: task {task!r} is in splits {assignment[code_of[task]]!r} and {split!r}; "
                            "a task must belong to exactly one split"
                        )
                    assignment[code_of[task]] = split
        else:
            assignment = self._split_by_fractions(fractions, split_seed)
        for split in SPLITS:
            if split not in assignment.values():
                raise CollectionError(f"{self.source}: split {split!r} has no tasks (of {len(self.task_names)} in total)")
        return assignment

    def _split_by_fractions(self, fractions: Sequence[float], split_seed: int) -> dict[int, str]:
        fractions = tuple(float(f) for f in fractions)
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
            raise CollectionError(f"{self.source}: fractions must be three non-negative numbers summing to 1, got {fractions}")
        n = len(self.task_names)
        sizes = [max(1, round(f * n)) if f > 0 else 0 for f in fractions[1:]]
        if n - sum(sizes) < 1:
            raise CollectionError(
                f"{self.source}: {n} tasks in column {self.task_col!r} are too few for fractions {fractions}"
            )
        order = np.random.default_rng(split_seed).permutation(n)
        cuts = np.cumsum([n - sum(sizes), sizes[0]])
        return {int(t): split for split, part in zip(SPLITS, np.split(order, cuts)) for t in part}

    # -- episode sampling -----------------------------------------------------------------------

    def _build_groups(self) -> None:
        """Rows grouped by task (regression) or by (task, class) (classification)."""
        if self.task_type == "regression":
            self._group_task = np.arange(len(self.task_names))
            self._group_class = np.full(len(self.task_names), -1)
            self._index = RaggedIndex(self._task_codes, len(self.task_names))
            return
        pair = self._task_codes * len(self.class_names) + self._y
        pairs, group_of_row = np.unique(pair, return_inverse=True)
        self._group_task = pairs // len(self.class_names)
        self._group_class = pairs % len(self.class_names)
        self._index = RaggedIndex(group_of_row, len(pairs))

    def _describe(self, group: int) -> str:
        task = f"task {self.task_names[self._group_task[group]]!r}"
        return task if self._group_class[group] < 0 else f"{task}, class {self.class_names[self._group_class[group]]!r}"

    def _plan(self, split: str, ways: int, need: int) -> tuple[np.ndarray, np.ndarray]:
        """Per serving task of ``split``: its usable groups (padded with -1) and how many there are."""
        key = (split, ways, need)
        if key in self._plans:
            return self._plans[key]
        in_split = np.array([self.task_split.get(int(t)) == split for t in self._group_task])
        groups = np.flatnonzero(in_split)
        small = groups[self._index.counts[groups] < need]
        if len(small) and self.too_small == "error":
            g = int(small[0])
            raise CollectionError(
                f"{self.source}: {self._describe(g)} in split {split!r} has {self._index.counts[g]} rows, fewer than "
                f"shots + queries = {need} (pass too_small='skip' to leave such tasks out)"
            )
        usable = groups[self._index.counts[groups] >= need]
        if self.task_type == "regression":
            plan = (usable[:, None], np.ones(len(usable), dtype=np.int64))
        else:
            owners, per_task = np.unique(self._group_task[usable], return_counts=True)
            if self.too_small == "error":
                all_owners, all_counts = np.unique(self._group_task[groups], return_counts=True)
                few = all_owners[all_counts < ways]
                if len(few):
                    count = int(all_counts[all_counts < ways][0])
                    raise CollectionError(
                        f"{self.source}: task {self.task_names[few[0]]!r} in split {split!r} has {count} classes, "
                        f"fewer than ways = {ways} (pass too_small='skip' to leave such tasks out)"
                    )
            serving = owners[per_task >= ways]
            table = np.full((len(serving), max(per_task.max(initial=0), 1)), -1, dtype=np.int64)
            for row, task in enumerate(serving):
                own = usable[self._group_task[usable] == task]
                table[row, : len(own)] = own
            plan = (table, (table >= 0).sum(axis=1))
        if len(plan[1]) == 0:
            what = f"{ways} classes with at least" if self.task_type == "classification" else "at least"
            raise CollectionError(f"{self.source}: no task in split {split!r} has {what} {need} rows (shots + queries)")
        self._plans[key] = plan
        return plan

    def sample(
        self,
        split: str = "train",
        ways: int | None = 5,
        shots: int = 1,
        queries: int = 15,
        tasks: int = 32,
        seed: int = 0,
    ) -> TaskBatch:
        """Each episode picks a task of ``split`` uniformly, then (classification) ``ways`` of its classes."""
        self._check_split(self.name, split)
        classification = self.task_type == "classification"
        ways = check_episode(self.name, ways, shots, queries, tasks, classification=classification)
        need = shots + queries
        table, sizes = self._plan(split, ways, need)
        rng = self._rng(seed, split)
        chosen = rng.integers(0, len(sizes), size=tasks)
        if classification:
            slots = sample_subsets(rng, sizes[chosen], ways)
            groups = table[chosen[:, None], slots]  # [T, ways]
        else:
            groups = table[chosen]  # [T, 1]
        rows = self._index.pick(rng, groups, need)  # [T, ways or 1, K+Q]
        x = torch.from_numpy(self._x[rows])  # [T, W, K+Q, F]
        features = x.shape[-1]
        support_x = x[:, :, :shots].reshape(tasks, -1, features)
        query_x = x[:, :, shots:].reshape(tasks, -1, features)
        if classification:
            support_y = torch.from_numpy(episode_labels(tasks, ways, shots).copy())
            query_y = torch.from_numpy(episode_labels(tasks, ways, queries).copy())
        else:
            y = torch.from_numpy(self._y[rows[:, 0]])  # [T, K+Q, 1]
            support_y, query_y = y[:, :shots], y[:, shots:]
        return TaskBatch(
            support_x=support_x,
            support_y=support_y,
            query_x=query_x,
            query_y=query_y,
            task_type=self.task_type,
            ways=ways if classification else None,
            shots=shots,
        )

    # -- views ----------------------------------------------------------------------------------

    def tasks_of(self, split: str) -> list[Any]:
        """The task values (users, sites) assigned to ``split``."""
        self._check_split(self.name, split)
        return [self.task_names[t] for t, s in sorted(self.task_split.items()) if s == split]

    def pooled(self, split: str = "train", max_examples: int | None = None, seed: int = 0) -> PooledData:
        """All rows of ``split``; classification labels are global class ids (see ``class_names``)."""
        self._check_split(self.name, split)
        rows = self._split_rows[split]
        if max_examples is not None and max_examples < len(rows):
            rows = np.sort(self._rng(seed, split).choice(rows, size=max_examples, replace=False))
        n_classes = len(self.class_names) if self.class_names is not None else None
        return PooledData(x=torch.from_numpy(self._x[rows]), y=torch.from_numpy(self._y[rows]), n_classes=n_classes)

    def summary(self) -> dict[str, SplitSummary]:
        out = {}
        for split in SPLITS:
            rows = self._split_rows[split]
            extra: dict[str, Any] = {"task_col": self.task_col, "features": len(self.feature_cols)}
            if self.excluded_columns:
                extra["excluded_columns"] = dict(self.excluded_columns)
            if self.class_names is not None:
                extra["classes"] = int(len(np.unique(self._y[rows])))
            out[split] = SplitSummary(units=len(self.tasks_of(split)), examples=len(rows), unit_name="tasks", extra=extra)
        return out

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _digest(self, frame: pd.DataFrame, fractions: Sequence[float], split_seed: int, standardize: bool) -> str:
        digest = hashlib.blake2b(digest_size=8)
        columns = [self.task_col, self.label_col, *self.feature_cols]
        digest.update(pd.util.hash_pandas_object(frame[columns], index=False).to_numpy().tobytes())
        options = {
            "collection": self.name,
            "columns": columns,
            "task_type": self.task_type,
            "splits": sorted((str(self.task_names[t]), s) for t, s in self.task_split.items()),
            "standardize": standardize,
            "too_small": self.too_small,
        }
        digest.update(json.dumps(options, sort_keys=True, default=str).encode())
        return digest.hexdigest()
