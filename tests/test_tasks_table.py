"""Table collections: synthetic frames whose features reveal each row's task and label, plus MovieLens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from metaauto.errors import CollectionError
from metaauto.tasks import TableCollection


def make_frame(tasks: int = 20, classes: int = 3, per_class: int = 6, seed: int = 0) -> pd.DataFrame:
    """Rows whose features ``tid``/``lab`` copy their task number and label, so episodes can be audited."""
    rng = np.random.default_rng(seed)
    rows = [
        {"site": f"s{t:02d}", "tid": float(t), "lab": float(c), "noise": rng.normal(), "label": f"c{c}"}
        for t in range(tasks) for c in range(classes) for _ in range(per_class)
    ]
    return pd.DataFrame(rows)


def test_classification_episodes_come_from_one_task_and_are_relabelled() -> None:
    coll = TableCollection(make_frame(), task_col="site", label_col="label", standardize=False)
    assert coll.task_type == "classification" and coll.feature_cols == ["tid", "lab", "noise"]
    batch = coll.sample("train", ways=2, shots=2, queries=3, tasks=12, seed=0)
    assert batch.support_x.shape == (12, 4, 3) and batch.query_x.shape == (12, 6, 3)
    assert batch.support_y[0].tolist() == [0, 0, 1, 1] and batch.query_y[0].tolist() == [0, 0, 0, 1, 1, 1]
    train_tasks = {float(t[1:]) for t in coll.tasks_of("train")}
    for t in range(12):
        x = torch.cat([batch.support_x[t], batch.query_x[t]])
        y = torch.cat([batch.support_y[t], batch.query_y[t]])
        assert len(set(x[:, 0].tolist())) == 1 and x[0, 0].item() in train_tasks  # one train task
        original = {label: set(x[y == label, 1].tolist()) for label in (0, 1)}
        assert all(len(v) == 1 for v in original.values()) and original[0] != original[1]
        assert len(set(x[:, 2].tolist())) == 10  # ten distinct rows


def test_regression_targets_match_their_rows() -> None:
    frame = make_frame(tasks=10, classes=1, per_class=30)
    frame["target"] = frame["noise"] * 3.0
    coll = TableCollection(frame, task_col="site", label_col="target", feature_cols=["tid", "noise"], standardize=False)
    assert coll.task_type == "regression" and coll.target_dim == 1
    batch = coll.sample("val", shots=5, queries=10, tasks=8, seed=1)
    assert batch.support_x.shape == (8, 5, 2) and batch.support_y.shape == (8, 5, 1) and batch.query_y.shape == (8, 10, 1)
    assert torch.allclose(batch.support_y[..., 0], batch.support_x[..., 1] * 3.0)
    assert all(len(set(batch.query_x[t, :, 0].tolist())) == 1 for t in range(8))


def test_same_seed_same_batch_and_splits_disjoint() -> None:
    coll = TableCollection(make_frame(), task_col="site", label_col="label")
    a, b = coll.sample("train", ways=3, seed=4, shots=1, queries=2), coll.sample("train", ways=3, seed=4, shots=1, queries=2)
    assert torch.equal(a.support_x, b.support_x)
    assert not torch.equal(a.support_x, coll.sample("train", ways=3, seed=5, shots=1, queries=2).support_x)
    parts = [set(coll.tasks_of(s)) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [14, 3, 3] and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    summary = coll.summary()
    assert summary["train"].units == 14 and summary["train"].examples == 14 * 18 and summary["val"].extra["classes"] == 3


def test_standardisation_uses_meta_train_rows_only() -> None:
    frame = make_frame()
    coll = TableCollection(frame, task_col="site", label_col="label")
    train = frame[frame["site"].isin(coll.tasks_of("train"))]
    assert np.allclose(coll.standardization.mean, train[["tid", "lab", "noise"]].mean().to_numpy())
    pooled = coll.pooled("train")
    assert torch.allclose(pooled.x.mean(0), torch.zeros(3), atol=1e-5)
    assert not torch.allclose(coll.pooled("test").x.mean(0), torch.zeros(3), atol=1e-2)
    assert pooled.n_classes == 3 and pooled.y.dtype == torch.int64


def test_csv_parquet_and_dataframe_inputs_agree(tmp_path: Path) -> None:
    frame = make_frame()
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    colls = [TableCollection(src, task_col="site", label_col="label") for src in (frame, tmp_path / "t.csv", str(tmp_path / "t.parquet"))]
    assert len({c.fingerprint for c in colls}) == 1
    batches = [c.sample("test", ways=2, shots=1, queries=1, seed=3) for c in colls]
    assert all(torch.equal(batches[0].query_x, b.query_x) for b in batches)
    other = TableCollection(frame, task_col="site", label_col="label", split_seed=1)
    assert other.fingerprint != colls[0].fingerprint


def test_split_column_and_explicit_mapping() -> None:
    frame = make_frame(tasks=5)
    frame["part"] = frame["site"].map({"s00": "train", "s01": "train", "s02": "val", "s03": "test", "s04": "test"})
    coll = TableCollection(frame, task_col="site", label_col="label", split_col="part")
    assert coll.tasks_of("test") == ["s03", "s04"] and "part" not in coll.feature_cols
    mapped = TableCollection(frame.drop(columns="part"), task_col="site", label_col="label",
                             splits={"train": ["s04"], "val": ["s00"], "test": ["s01", "s02"]})
    assert mapped.tasks_of("train") == ["s04"] and mapped.summary()["train"].examples == 18  # s03 left out


def test_skip_policy_serves_from_tasks_that_can() -> None:
    frame = make_frame(tasks=6)
    frame = frame[~((frame["site"] == "s01") & (frame["label"] == "c2"))]  # s01 has two classes
    frame = frame.drop(frame.index[(frame["site"] == "s02") & (frame["label"] == "c0")][:3])  # s02/c0: 3 rows
    splits = {"train": ["s00", "s01", "s02"], "val": ["s03"], "test": ["s04", "s05"]}
    with pytest.raises(CollectionError, match="task 's01' in split 'train' has 2 classes, fewer than ways = 3"):
        TableCollection(frame, task_col="site", label_col="label", splits=splits, standardize=False).sample(ways=3, shots=1, queries=1)
    with pytest.raises(CollectionError, match="task 's02', class 'c0' in split 'train' has 3 rows, fewer than shots \\+ queries = 4"):
        TableCollection(frame, task_col="site", label_col="label", splits=splits).sample(ways=2, shots=2, queries=2)
    coll = TableCollection(frame, task_col="site", label_col="label", splits=splits, too_small="skip", standardize=False)
    batch = coll.sample(ways=3, shots=1, queries=2, tasks=40)
    assert set(batch.support_x[:, 0, 0].tolist()) == {0.0, 2.0}  # s01 has too few classes
    batch = coll.sample(ways=3, shots=2, queries=2, tasks=40)
    assert set(batch.support_x[:, 0, 0].tolist()) == {0.0}  # s02/c0 now too small as well
    with pytest.raises(CollectionError, match="no task in split 'val' has 3 classes with at least 7 rows"):
        coll.sample("val", ways=3, shots=3, queries=4)


def test_movielens_users_as_regression_tasks(data_dir: Path) -> None:
    ratings = data_dir / "movielens" / "ml-latest-small" / "ratings.csv"
    coll = TableCollection(ratings, task_col="userId", label_col="rating", feature_cols=["movieId", "timestamp"])
    assert coll.task_type == "regression" and sum(s.units for s in coll.summary().values()) == 610
    batch = coll.sample("test", shots=10, queries=10, tasks=4)
    assert batch.support_y.shape == (4, 10, 1) and 0.5 <= batch.query_y.min() and batch.query_y.max() <= 5


# -- validation errors ----------------------------------------------------------------------------------


def _frame_with(**changes) -> pd.DataFrame:
    frame = make_frame()
    for (column, row), value in changes.items():
        frame.loc[row, column] = value
    return frame


@pytest.mark.parametrize(
    "frame, options, message",
    [
        (make_frame(), {"label_col": "diagnosis"}, r"DataFrame: column 'diagnosis' not found"),
        (make_frame().assign(city="x"), {"feature_cols": ["tid", "city"]}, r"feature column 'city' is not numeric"),
        (make_frame().astype({"noise": object}).pipe(lambda f: f.assign(noise=f["noise"].where(f.index != 40, np.nan)).astype({"noise": float})),
         {}, r"feature column 'noise' has a missing or infinite value \(first at task 's02', row 40\)"),
        (make_frame().assign(tid=lambda f: f["tid"].where(f.index != 25, np.inf)), {},
         r"feature column 'tid' has a missing or infinite value \(first at task 's01', row 25\)"),
        (make_frame().assign(label=lambda f: f["label"].where(f.index != 7)), {}, r"label column 'label' is missing at task 's00', row 7"),
        (make_frame(), {"splits": {"train": ["s00", "s01"], "val": ["s01"], "test": ["s02"]}},
         r"task 's01' is in splits 'train' and 'val'"),
        (make_frame(), {"splits": {"train": ["s00"], "val": ["s01"], "test": []}}, r"split 'test' has no tasks"),
        (make_frame(), {"splits": {"train": ["s00"], "dev": ["s01"], "test": ["s02"]}}, r"unknown split 'dev' in splits"),
        (make_frame(), {"splits": {"train": ["s00"], "val": ["s99"], "test": ["s02"]}}, r"task 's99' of split 'val' is not in column 'site'"),
        (make_frame().assign(part=lambda f: np.where(f.index == 3, "val", "train")), {"split_col": "part"},
         r"task 's00' has rows in splits \['train', 'val'\] \(column 'part'\)"),
        (make_frame().assign(part="holdout"), {"split_col": "part"}, r"split column 'part' has value 'holdout' at row 0"),
        (make_frame(tasks=3), {"fractions": (0.8, 0.2, 0.0)}, r"split 'test' has no tasks \(of 3 in total\)"),
        (make_frame(), {"fractions": (0.5, 0.5, 0.5)}, r"fractions must be three non-negative numbers summing to 1"),
        (make_frame().iloc[:0], {}, r"the table has no rows"),
    ],
    ids=["missing-column", "non-numeric-feature", "nan-feature", "inf-feature", "nan-label", "leaking-mapping",
         "empty-split", "unknown-split-key", "unknown-task", "leaking-split-col", "bad-split-value", "fraction-empty",
         "bad-fractions", "no-rows"],
)
def test_validation_errors_name_the_culprit(frame: pd.DataFrame, options: dict, message: str) -> None:
    with pytest.raises(CollectionError, match=message):
        TableCollection(frame, **{"task_col": "site", "label_col": "label", **options})


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(CollectionError, match=r"cannot read table .*broken\.parquet"):
        TableCollection(bad, task_col="site", label_col="label")
    with pytest.raises(CollectionError, match=r"cannot read table .*absent\.csv"):
        TableCollection(tmp_path / "absent.csv", task_col="site", label_col="label")
    with pytest.raises(CollectionError, match=r"data\.xlsx: unsupported table file type"):
        TableCollection(tmp_path / "data.xlsx", task_col="site", label_col="label")
    make_frame().to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(CollectionError, match=r"t\.csv: column 'user' not found"):
        TableCollection(tmp_path / "t.csv", task_col="user", label_col="label")


def test_episode_request_errors() -> None:
    coll = TableCollection(make_frame(), task_col="site", label_col="label")
    with pytest.raises(CollectionError, match="unknown split 'dev'"):
        coll.sample("dev")
    with pytest.raises(CollectionError, match="classification collection: ways must be an integer >= 1, got None"):
        coll.sample(ways=None)


def test_a_text_cell_in_a_numeric_csv_column_is_an_error_naming_the_cells(tmp_path: Path) -> None:
    """One `abc` makes pandas read the whole column as text; dropping it silently would train on 2 of 3 features."""
    path = tmp_path / "clinics.csv"
    frame = make_frame()
    frame.to_csv(path, index=False)
    text = path.read_text().splitlines()
    for line in (5, 30, 31, 32, 33):  # rows 4, 29..32 of the frame
        cells = text[line].split(",")
        cells[3] = "abc" if line == 5 else " n/a "
        text[line] = ",".join(cells)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(CollectionError, match=(
            r"clinics\.csv: feature column 'noise' is numeric except for 5 cell\(s\) that are not numbers: "
            r"row 4 \(task 's00'\): 'abc', row 29 \(task 's01'\): ' n/a ', row 30 \(task 's01'\): ' n/a ' and 2 more")):
        TableCollection(path, task_col="site", label_col="label")
    # the same column named explicitly gets the same message, not just "not numeric"
    with pytest.raises(CollectionError, match=r"feature column 'noise' is numeric except for 5 cell"):
        TableCollection(path, task_col="site", label_col="label", feature_cols=["tid", "noise"])


def test_text_and_date_columns_left_out_by_default_are_logged_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    frame = make_frame().assign(city="Leeds", seen=pd.Timestamp("2026-01-01"))
    with caplog.at_level("WARNING", logger="metaauto.tasks.table"):
        coll = TableCollection(frame, task_col="site", label_col="label")
    assert coll.feature_cols == ["tid", "lab", "noise"]
    assert coll.excluded_columns == {
        "city": "not numeric (e.g. 'Leeds'); encode it and pass feature_cols to use it",
        "seen": "dates (dtype datetime64[us]); derive numeric features from it and pass feature_cols"}
    assert coll.summary()["train"].extra["excluded_columns"] == coll.excluded_columns
    logged = [r.getMessage() for r in caplog.records]
    assert any("column 'city' is not used as a feature: not numeric" in m for m in logged), logged
    assert any("column 'seen' is not used as a feature: dates" in m for m in logged), logged
    # blanks are missing values (an error of their own, naming the row), never a reason to drop the column
    blank = make_frame().astype({"noise": object})
    blank.loc[3, "noise"] = None
    with pytest.raises(CollectionError, match=r"feature column 'noise' has a missing or infinite value \(first at task 's00', row 3\)"):
        TableCollection(blank, task_col="site", label_col="label")
