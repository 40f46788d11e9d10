"""Omniglot collection on the real archives, plus corrupt copies derived from them in tmp_path."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import metaauto.tasks.omniglot_archive as archive_mod
from metaauto.errors import CollectionError
from metaauto.tasks import OmniglotCollection, load_collection
from metaauto.tasks.omniglot_archive import ALPHABETS, BACKGROUND, EVALUATION


@pytest.fixture(scope="module")
def omniglot(data_dir: Path) -> OmniglotCollection:
    return OmniglotCollection(data_dir)


@pytest.fixture(scope="module")
def rotated(data_dir: Path) -> OmniglotCollection:
    return OmniglotCollection(data_dir, rotations=True)


def test_batch_shapes_dtypes_and_label_layout(omniglot: OmniglotCollection) -> None:
    batch = omniglot.sample("train", ways=5, shots=2, queries=3, tasks=4, seed=0)
    assert batch.support_x.shape == (4, 10, 1, 28, 28) and batch.query_x.shape == (4, 15, 1, 28, 28)
    assert batch.support_x.dtype == torch.float32 and batch.support_y.dtype == torch.int64
    assert batch.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert batch.query_y[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert batch.task_type == "classification" and batch.ways == 5 and batch.shots == 2
    # strokes are 1 on a 0 background: most pixels are background
    assert 0.0 <= batch.support_x.min() and batch.support_x.max() == 1.0
    assert batch.support_x.mean() < 0.25


def test_episode_examples_belong_to_their_labelled_class(omniglot: OmniglotCollection) -> None:
    pooled = omniglot.pooled("val")
    class_of = {img.numpy().tobytes(): int(c) for img, c in zip(pooled.x, pooled.y)}
    batch = omniglot.sample("val", ways=5, shots=1, queries=4, tasks=6, seed=3)
    for t in range(batch.tasks):
        support = [class_of[img.numpy().tobytes()] for img in batch.support_x[t]]
        query = [class_of[img.numpy().tobytes()] for img in batch.query_x[t]]
        assert len(set(support)) == 5  # five distinct characters
        assert query == [support[label] for label in batch.query_y[t].tolist()]
        assert len({img.numpy().tobytes() for img in torch.cat([batch.support_x[t], batch.query_x[t]])}) == 25


def test_sampling_is_a_function_of_seed_and_split(omniglot: OmniglotCollection) -> None:
    a = omniglot.sample("train", tasks=8, seed=11)
    b = omniglot.sample("train", tasks=8, seed=11)
    c = omniglot.sample("train", tasks=8, seed=12)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert not torch.equal(a.support_x, c.support_x)


def test_splits_are_disjoint_by_alphabet_and_test_is_the_evaluation_set(omniglot: OmniglotCollection) -> None:
    train, val, test = (set(omniglot.classes(s)) for s in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    alphabets = {s: {c.split("/")[0] for c in omniglot.classes(s)} for s in ("train", "val", "test")}
    assert not alphabets["train"] & alphabets["val"]
    assert alphabets["train"] | alphabets["val"] == set(ALPHABETS[BACKGROUND])
    assert alphabets["test"] == set(ALPHABETS[EVALUATION])
    summary = omniglot.summary()
    assert (summary["train"].units, summary["val"].units, summary["test"].units) == (807, 157, 659)
    assert summary["test"].examples == 659 * 20


def test_rotations_add_rotated_classes_within_the_split(omniglot, rotated) -> None:
    assert len(rotated.classes("val")) == 4 * len(omniglot.classes("val"))
    n = len(omniglot.classes("val"))
    assert rotated.classes("val")[n] == omniglot.classes("val")[0] + "@rot90"
    plain, rot = omniglot.pooled("val"), rotated.pooled("val")
    assert torch.equal(rot.x[: 20 * n], plain.x)
    assert torch.equal(rot.x[20 * n], torch.rot90(plain.x[0], 1, dims=(1, 2)))
    assert rot.n_classes == 4 * n and rotated.fingerprint != omniglot.fingerprint
    batch = rotated.sample("test", ways=20, shots=1, queries=1, tasks=2, seed=0)
    assert batch.support_x.shape == (2, 20, 1, 28, 28)


def test_pooled_and_options(data_dir: Path, omniglot: OmniglotCollection) -> None:
    pooled = omniglot.pooled("train", max_examples=100, seed=1)
    assert pooled.x.shape == (100, 1, 28, 28) and pooled.n_classes == 807 and pooled.y.max() < 807
    small = load_collection("omniglot", data_dir=data_dir, image_size=14)
    assert small.sample("val", tasks=1).support_x.shape == (1, 5, 1, 14, 14)
    assert small.fingerprint != omniglot.fingerprint
    assert OmniglotCollection(data_dir).fingerprint == omniglot.fingerprint


def test_episode_requests_that_cannot_be_served(omniglot: OmniglotCollection) -> None:
    with pytest.raises(CollectionError, match=r"split 'val' has 157 classes, fewer than the 200 ways"):
        omniglot.sample("val", ways=200)
    with pytest.raises(CollectionError, match=r"class '.+/character\d+'.*20 drawings.*= 21"):
        omniglot.sample("train", shots=6, queries=15)
    with pytest.raises(CollectionError, match="unknown split 'meta-train'"):
        omniglot.sample("meta-train")
    with pytest.raises(CollectionError, match="val_alphabets.*Klingon"):
        OmniglotCollection(val_alphabets=["Klingon"])


# -- cache --------------------------------------------------------------------------------------------


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("METAAUTO_CACHE_DIR", str(cache))
    return cache


def _counting_decoder(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = archive_mod.decode_archive

    def counting(path, archive, image_size):
        calls.append(archive)
        return real(path, archive, image_size)

    monkeypatch.setattr(archive_mod, "decode_archive", counting)
    return calls


def test_cache_is_written_once_reused_and_keyed_by_source(
    data_dir: Path, tmp_path: Path, omniglot: OmniglotCollection, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    (root / "omniglot").mkdir(parents=True)
    for name in (BACKGROUND, EVALUATION):
        shutil.copy(data_dir / "omniglot" / f"{name}.zip", root / "omniglot" / f"{name}.zip")
    # a private cache seeded with the session's background decode, so that only the evaluation set decodes
    background = archive_mod.cache_file(BACKGROUND, archive_mod.file_digest(root / "omniglot" / f"{BACKGROUND}.zip"), 28)
    cache = tmp_path / "cache"
    (cache / "omniglot").mkdir(parents=True)
    shutil.copy(background, cache / "omniglot" / background.name)
    monkeypatch.setenv("METAAUTO_CACHE_DIR", str(cache))
    calls = _counting_decoder(monkeypatch)

    first = OmniglotCollection(root)
    assert calls == [EVALUATION]
    files = sorted(p.name for p in (cache / "omniglot").iterdir())
    assert len(files) == 2 and files[1].startswith(EVALUATION) and files[1].endswith("-28px.npz")
    second = OmniglotCollection(root)
    assert calls == [EVALUATION]  # no decode the second time
    assert first.fingerprint == second.fingerprint == omniglot.fingerprint
    assert torch.equal(first.sample("test", tasks=2).support_x, omniglot.sample("test", tasks=2).support_x)

    # same images, different bytes (a zip comment): a new digest, so a new decode of that archive only
    with zipfile.ZipFile(root / "omniglot" / f"{EVALUATION}.zip", "a") as zf:
        zf.comment = b"re-packed"
    third = OmniglotCollection(root)
    assert calls == [EVALUATION, EVALUATION]
    assert len(list((cache / "omniglot").iterdir())) == 3
    assert third.fingerprint != first.fingerprint
    assert torch.equal(third.sample("test", tasks=2).query_x, first.sample("test", tasks=2).query_x)


def test_interrupted_cache_write_leaves_nothing(private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = archive_mod.DecodedArchive(images=np.zeros((2, 20, 4, 4), np.uint8), characters=("A/c1", "A/c2"))
    monkeypatch.setattr(archive_mod, "decode_archive", lambda path, archive, size: fake)

    def crash(file, **arrays):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(archive_mod.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        archive_mod.load_archive(Path("unused.zip"), EVALUATION, 4, "0" * 32)
    assert list((private_cache / "omniglot").iterdir()) == []


# -- corrupt archives ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluation_members(data_dir: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(data_dir / "omniglot" / f"{EVALUATION}.zip") as zf:
        return [(name, zf.read(name)) for name in zf.namelist()]


def _data_with_evaluation(data_dir: Path, tmp_path: Path, members: list[tuple[str, bytes]] | bytes) -> Path:
    root = tmp_path / "data"
    (root / "omniglot").mkdir(parents=True)
    os.symlink(data_dir / "omniglot" / f"{BACKGROUND}.zip", root / "omniglot" / f"{BACKGROUND}.zip")
    target = root / "omniglot" / f"{EVALUATION}.zip"
    if isinstance(members, bytes):
        target.write_bytes(members)
    else:
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
            for name, content in members:
                zf.writestr(name, content)
    return root


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda m: b"this is not a zip", r"images_evaluation\.zip is not a readable zip archive"),
        ("truncate", r"images_evaluation\.zip is not a readable zip archive"),
        (lambda m: [x for x in m if "/ULOG/" not in x[0]], r"images_evaluation\.zip: alphabet\(s\) ULOG missing"),
        (
            lambda m: [x for x in m if x[0] != "images_evaluation/Angelic/character03/0967_07.png"],
            r"character images_evaluation/Angelic/character03 has 19 drawings, expected 20",
        ),
        (
            lambda m: [x for x in m if not x[0].startswith("images_evaluation/Tengwar/character25/")],
            r"alphabet Tengwar has 24 characters, the official set has 25",
        ),
        (
            lambda m: [(n, b"garbage" if n.endswith("character01/0965_02.png") else c) for n, c in m],
            r"images_evaluation\.zip: member images_evaluation/Angelic/character01/0965_02\.png cannot be decoded",
        ),
    ],
    ids=["not-a-zip", "truncated", "missing-alphabet", "missing-drawing", "missing-character", "bad-png"],
)
def test_corrupt_archive_is_named_and_nothing_is_cached(data_dir, tmp_path, evaluation_members, corrupt, message) -> None:
    # the session cache already holds the background decode, so only the corrupt archive is read
    if corrupt == "truncate":
        content = (data_dir / "omniglot" / f"{EVALUATION}.zip").read_bytes()
        root = _data_with_evaluation(data_dir, tmp_path, content[: len(content) // 2])
    else:
        root = _data_with_evaluation(data_dir, tmp_path, corrupt(evaluation_members))
    with pytest.raises(CollectionError, match=message):
        OmniglotCollection(root)
    digest = archive_mod.file_digest(root / "omniglot" / f"{EVALUATION}.zip")
    assert not archive_mod.cache_file(EVALUATION, digest, 28).exists()


def test_missing_archive_suggests_download(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "omniglot").mkdir()
    with pytest.raises(CollectionError, match=r"images_background\.zip not found.*download=True"):
        OmniglotCollection(tmp_path)
