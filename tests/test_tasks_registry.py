"""load_collection / register_collection: names, tables by path or DataFrame, clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import metaauto.tasks.catalog as registry
from metaauto.errors import CollectionError
from metaauto.tasks import (
    SinusoidCollection,
    TableCollection,
    available_collections,
    load_collection,
    register_collection,
)


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"user": [u for u in range(6) for _ in range(4)], "x": range(24), "y": [0.5 * i for i in range(24)]})


def test_builtin_names_and_options() -> None:
    assert {"omniglot", "sinusoid"} <= set(available_collections())
    coll = load_collection("Sinusoid", amplitude=(1.0, 2.0))
    assert isinstance(coll, SinusoidCollection) and coll.amplitude == (1.0, 2.0)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(CollectionError, match=r"unknown collection 'mnist'; registered collections are \[.*'omniglot'.*'sinusoid'"):
        load_collection("mnist")


def test_tables_from_dataframe_csv_and_parquet(tmp_path: Path) -> None:
    frame = _frame()
    frame.to_csv(tmp_path / "ratings.csv", index=False)
    frame.to_parquet(tmp_path / "ratings.parquet", index=False)
    options = {"task_col": "user", "label_col": "y", "fractions": (0.5, 0.25, 0.25)}
    from_frame = load_collection(frame, **options)
    from_csv = load_collection("ratings.csv", data_dir=tmp_path, **options)  # relative to data_dir
    from_parquet = load_collection(tmp_path / "ratings.parquet", **options)
    assert all(isinstance(c, TableCollection) for c in (from_frame, from_csv, from_parquet))
    assert from_frame.fingerprint == from_csv.fingerprint == from_parquet.fingerprint
    assert from_csv.task_type == "regression" and from_csv.source.endswith("ratings.csv")
    with pytest.raises(CollectionError, match=r"cannot read table .*missing\.csv"):
        load_collection("missing.csv", data_dir=tmp_path, **options)


def test_register_collection(clean_registry: None) -> None:
    seen = {}

    def factory(data_dir, **options):
        seen.update(data_dir=data_dir, **options)
        return SinusoidCollection(amplitude=options["amplitude"])

    register_collection("waves", factory)
    assert "waves" in available_collections()
    coll = load_collection("waves", data_dir="/somewhere", amplitude=(1.0, 1.0))
    assert isinstance(coll, SinusoidCollection) and seen == {"data_dir": "/somewhere", "amplitude": (1.0, 1.0)}
    with pytest.raises(CollectionError, match="collection 'waves' is already registered"):
        register_collection("waves", factory)
    register_collection("waves", lambda data_dir, **o: SinusoidCollection(), replace=True)
    assert load_collection("waves").amplitude == (0.1, 5.0)
    with pytest.raises(CollectionError, match="would read as a table path"):
        register_collection("data.csv", factory)
