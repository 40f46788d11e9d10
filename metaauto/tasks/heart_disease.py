"""UCI Heart Disease across four hospitals, as a leave-one-site-out transfer collection.

Each site (Cleveland, Hungary, Switzerland, VA Long Beach) is a task; the classes are ``num == 0`` (no
disease) and ``num > 0``. One site is held out (the ``"test"`` split); meta-training episodes come from
the other three. Missingness differs a lot by site (Switzerland has no cholesterol, most sites lack
``ca``/``thal``), so every feature with a missing value anywhere gets a 0/1 missing indicator, and the
imputed value (the median) and the standardisation are computed on the *training sites only*: nothing
about the held-out hospital shapes the features the model sees.

This is a research benchmark for few-shot transfer, not a clinical tool.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metaauto.config import data_dir as resolve_data_dir
from metaauto.errors import CollectionError
from metaauto.tasks.table import TableCollection

#: UCI column order of the ``processed.*.data`` files (no header row).
COLUMNS = ("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak", "slope", "ca", "thal", "num")
FEATURES = COLUMNS[:-1]
#: a recorded 0 in these columns means "not measured" (all of Switzerland's cholesterol values are 0)
ZERO_MEANS_MISSING = ("chol", "trestbps")
#: site name -> file name
SITES = {
    "cleveland": "processed.cleveland.data",
    "hungary": "processed.hungarian.data",
    "switzerland": "processed.switzerland.data",
    "va": "processed.va.data",
}


def read_site(path: str | os.PathLike) -> pd.DataFrame:
    """One ``processed.*.data`` file as a float frame with NaN for ``?``; errors name file, line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CollectionError(f"cannot read heart-disease file {path}: {exc}") from exc
    rows: list[list[float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        if len(fields) != len(COLUMNS):
            raise CollectionError(f"{path}, line {number}: expected {len(COLUMNS)} comma-separated values, got {len(fields)}")
        values = []
        for column, field in zip(COLUMNS, fields):
            field = field.strip()
            if field == "?":
                if column == "num":
                    raise CollectionError(f"{path}, line {number}, column 'num': the target is missing")
                values.append(np.nan)
                continue
            try:
                value = float(field)
            except ValueError:
                raise CollectionError(f"{path}, line {number}, column {column!r}: {field!r} is not a number or '?'") from None
            if not np.isfinite(value):
                raise CollectionError(f"{path}, line {number}, column {column!r}: {field!r} is not finite")
            values.append(value)
        rows.append(values)
    if not rows:
        raise CollectionError(f"{path}: no patients in the file")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def read_sites(directory: str | os.PathLike) -> pd.DataFrame:
    """All four sites stacked, with a ``site`` column and the binary ``disease`` target (num > 0)."""
    directory = Path(directory)
    frames = []
    for site, name in SITES.items():
        path = directory / name
        if not path.is_file():
            raise CollectionError(f"heart-disease: {path} not found; expected the four UCI files {sorted(SITES.values())}")
        frame = read_site(path)
        frame.insert(0, "site", site)
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    for column in ZERO_MEANS_MISSING:  # physiologically impossible zeros are how some sites record "not measured"
        data.loc[data[column] == 0, column] = np.nan
    data["disease"] = (data["num"] > 0).astype(np.int64)
    return data.drop(columns="num")


def prepare_features(data: pd.DataFrame, train_sites: Sequence[str]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Impute with training-site medians and add ``<col>_missing`` indicators.

    Indicators are added for every feature missing somewhere in the data (a fixed, data-independent
    choice would also do; this one only looks at *where* values are missing, which the held-out site's
    features at prediction time show anyway). Medians come from ``train_sites`` rows only.
    """
    train = data["site"].isin(list(train_sites)).to_numpy()
    out = data[["site", "disease"]].copy()
    medians: dict[str, float] = {}
    for column in FEATURES:
        values = data[column]
        median = float(values[train].median()) if values[train].notna().any() else 0.0
        medians[column] = median
        out[column] = values.fillna(median)
        if values.isna().any():
            out[f"{column}_missing"] = values.isna().astype(np.float64)
    return out, medians


class HeartDiseaseCollection(TableCollection):
    """Leave-one-site-out heart-disease episodes: tasks are sites, classes are disease 0/1.

    Parameters
    ----------
    data_dir:
        Directory holding the four ``processed.*.data`` files (``None``: ``$METAAUTO_DATA_DIR/heart-disease``).
    target_site:
        The held-out site (``"test"`` split): one of ``cleveland``, ``hungary``, ``switzerland``, ``va``.
    val_site:
        Optionally one of the other three sites as the ``"val"`` split; by default all three train
        and there is no validation split (train with ``val_every=0``).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        target_site: str = "switzerland",
        val_site: str | None = None,
        too_small: str = "error",
    ) -> None:
        directory = self._directory(data_dir)
        if target_site not in SITES:
            raise CollectionError(f"heart-disease: unknown target_site {target_site!r}; expected one of {list(SITES)}")
        if val_site is not None and (val_site not in SITES or val_site == target_site):
            raise CollectionError(
                f"heart-disease: val_site must be a site other than the target {target_site!r}, got {val_site!r}"
            )
        self.target_site, self.val_site = target_site, val_site
        self.train_sites = [s for s in SITES if s not in (target_site, val_site)]
        raw = read_sites(directory)
        frame, self.medians = prepare_features(raw, self.train_sites)
        self.raw = raw
        splits: dict[str, list[str]] = {"train": self.train_sites, "test": [target_site]}
        if val_site is not None:
            splits["val"] = [val_site]
        super().__init__(
            frame,
            task_col="site",
            label_col="disease",
            feature_cols=[c for c in frame.columns if c not in ("site", "disease")],
            task_type="classification",
            splits=splits,
            too_small=too_small,  # type: ignore[arg-type]
            name="heart-disease",
            source=str(directory),
        )

    @staticmethod
    def _directory(data_dir: str | os.PathLike | None) -> Path:
        base = Path(data_dir) if data_dir is not None else Path(resolve_data_dir())
        if (base / SITES["cleveland"]).is_file():
            return base
        return base / "heart-disease"

    def _assign_splits(self, frame, task_codes, splits, fractions, split_seed):  # type: ignore[override]
        """As the table's, but the ``"val"`` split may be empty (three training sites are few to spare)."""
        code_of = {name: code for code, name in enumerate(self.task_names)}
        assignment = {code_of[site]: split for split, sites in (splits or {}).items() for site in sites}
        for split in ("train", "test"):
            if split not in assignment.values():
                raise CollectionError(f"{self.source}: split {split!r} has no sites")
        return assignment

    def site_data(self, site: str) -> tuple[np.ndarray, np.ndarray]:
        """The prepared (imputed, standardised) features and 0/1 labels of every patient of ``site``."""
        if site not in self.task_names:
            raise CollectionError(f"heart-disease: unknown site {site!r}; sites are {self.task_names}")
        rows = self._task_codes == self.task_names.index(site)
        return self._x[rows], self._y[rows]

    def split_data(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of all patients of the sites in ``split`` (e.g. pooled training data)."""
        self._check_split(self.name, split)
        rows = self._split_rows[split]
        return self._x[rows], self._y[rows]

    def fitted_statistics(self) -> dict[str, Any]:
        """Everything fitted from data: medians, standardisation mean/std (for leakage checks)."""
        std = self.standardization
        return {
            "medians": dict(self.medians),
            "mean": None if std is None else std.mean.copy(),
            "std": None if std is None else std.std.copy(),
        }

