"""Getting the datasets (metaauto.tasks.datasets): present copies are checked, downloads are hash-checked.

Downloads are exercised against a real HTTP server on loopback serving copies of the shared data: the
code path is the one users run (pooch over HTTP), and the tests never touch the network.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

import metaauto.tasks.datasets as datasets
from metaauto.errors import CollectionError


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1: ``(directory, base URL)``."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args, **kwargs: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_present_copies_are_checked_and_kept(data_dir: Path) -> None:
    fetched = datasets.fetch(data_dir=data_dir, progress=False)
    assert [(f.dataset, f.action) for f in fetched] == [
        ("omniglot", "present"), ("movielens", "present"), ("heart-disease", "present")]
    assert fetched[1].path == data_dir / "movielens" / "ml-latest-small"


def test_unknown_name_fails_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match=r"unknown dataset\(s\) 'omniglott'; expected omniglot, movielens"):
        datasets.fetch(["heart-disease", "omniglott"], data_dir=tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_a_changed_local_file_is_named_with_both_digests(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data" / "heart-disease"
    shutil.copytree(data_dir / "heart-disease", copy)
    path = copy / "processed.va.data"
    path.write_bytes(path.read_bytes().replace(b"?", b"0", 1))
    with pytest.raises(CollectionError, match=r"processed\.va\.data has sha256 [0-9a-f]{64}, expected e7c93d8d"):
        datasets.fetch("heart-disease", data_dir=tmp_path / "data", progress=False)


def test_heart_disease_downloads_missing_files_with_checked_hashes(data_dir: Path, tmp_path: Path, served,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = served
    for name in datasets.HEART_SHA256:
        shutil.copy(data_dir / "heart-disease" / name, root / name)
    monkeypatch.setattr(datasets, "HEART_URL", url + "/{name}")
    target = tmp_path / "data"
    (fetched,) = datasets.fetch("heart-disease", data_dir=target, progress=False)
    assert fetched.action == "downloaded"
    for name, expected in datasets.HEART_SHA256.items():
        assert datasets.sha256(target / "heart-disease" / name) == expected
    # a publisher's changed file is refused and not kept
    (target / "heart-disease" / "processed.va.data").unlink()
    (root / "processed.va.data").write_bytes(b"changed upstream\n")
    with pytest.raises(CollectionError, match=r"processed\.va\.data failed its hash check"):
        datasets.fetch("heart-disease", data_dir=target, progress=False)
    assert not (target / "heart-disease" / "processed.va.data").exists()


def _zip_movielens(data_dir: Path, target: Path, ratings: bytes | None = None) -> None:
    with zipfile.ZipFile(target, "w") as zf:
        for name in datasets.MOVIELENS_SHA256:
            source = data_dir / "movielens" / "ml-latest-small" / name
            zf.writestr(f"ml-latest-small/{name}", ratings if name == "ratings.csv" and ratings else source.read_bytes())


def test_movielens_members_are_checked_before_anything_is_moved_into_place(data_dir: Path, tmp_path: Path, served,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = served
    monkeypatch.setattr(datasets, "MOVIELENS_URL", url + "/ml-latest-small.zip")
    target = tmp_path / "data"
    _zip_movielens(data_dir, root / "ml-latest-small.zip", ratings=b"userId,movieId,rating,timestamp\n1,1,5.0,0\n")
    with pytest.raises(CollectionError, match=r"ratings\.csv has sha256 .* expected aa289ca8"):
        datasets.fetch("movielens", data_dir=target, progress=False)
    assert not (target / "movielens" / "ml-latest-small").exists()
    assert [p.name for p in (target / "movielens").iterdir()] == []  # the staging directory is gone too
    _zip_movielens(data_dir, root / "ml-latest-small.zip")
    (fetched,) = datasets.fetch("movielens", data_dir=target, progress=False)
    assert fetched.action == "downloaded" and sorted(p.name for p in fetched.path.iterdir()) == sorted(datasets.MOVIELENS_SHA256)


def test_omniglot_download_checks_the_official_md5(data_dir: Path, tmp_path: Path, served,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = served
    for archive in datasets.OMNIGLOT_MD5:
        shutil.copy(data_dir / "omniglot" / f"{archive}.zip", root / f"{archive}.zip")
    monkeypatch.setattr(datasets, "OMNIGLOT_URL", url + "/{archive}.zip")
    target = tmp_path / "data"
    # the shared copies are re-packed (pixel-identical, byte-different): the official md5 refuses them
    with pytest.raises(CollectionError, match=r"images_background\.zip failed its hash check"):
        datasets.fetch("omniglot", data_dir=target, progress=False)
    assert list((target / "omniglot").iterdir()) == []
    for archive in datasets.OMNIGLOT_MD5:
        digest = hashlib.md5((root / f"{archive}.zip").read_bytes()).hexdigest()
        monkeypatch.setitem(datasets.OMNIGLOT_MD5, archive, digest)
    (fetched,) = datasets.fetch("omniglot", data_dir=target, progress=False)
    assert fetched.action == "downloaded"
    # and what was downloaded loads as the collection
    from metaauto.tasks import OmniglotCollection

    assert OmniglotCollection(target).summary()["test"].units == 659


def test_omniglot_download_option_of_the_collection_uses_the_fetcher(tmp_path: Path, served,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = served
    (root / "images_background.zip").write_bytes(b"not the archive")
    monkeypatch.setattr(datasets, "OMNIGLOT_URL", url + "/{archive}.zip")
    from metaauto.tasks import OmniglotCollection

    with pytest.raises(CollectionError, match=r"images_background\.zip failed its hash check"):
        OmniglotCollection(tmp_path / "data", download=True)


def test_cli_fetch_checks_present_copies_and_refuses_unknown_names(data_dir: Path) -> None:
    from typer.testing import CliRunner

    from metaauto.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["data", "fetch", "--data-dir", str(data_dir), "--json"])
    assert done.exit_code == 0, done.output
    assert '"action": "present"' in done.output and '"dataset": "heart-disease"' in done.output
    bad = runner.invoke(app, ["data", "fetch", "omniglot", "bogus", "--data-dir", str(data_dir)])
    assert bad.exit_code == 2 and "unknown dataset(s) 'bogus'" in bad.output
