"""Getting the public datasets: download with checked hashes, or accept a local copy that is already there.

``fetch("omniglot" | "movielens" | "heart-disease", data_dir)`` makes ``data_dir`` hold what the
collections read (the layout of the project's shared data directory):

* ``omniglot/images_background.zip``, ``omniglot/images_evaluation.zip`` (brendenlake/omniglot, MIT);
* ``movielens/ml-latest-small/{ratings,movies,tags,links}.csv`` (GroupLens; non-commercial terms);
* ``heart-disease/processed.{cleveland,hungarian,switzerland,va}.data`` (UCI Heart Disease).

Downloads go through :mod:`pooch`, which checks each file's hash before it keeps it and writes through a
temporary name, so an interrupted or tampered transfer leaves nothing behind. A copy already in place is
checked, never overwritten: the MovieLens and heart-disease files by their sha256; the Omniglot zips by
their structure (re-packed copies of the official images are byte-different but pixel-identical; see
:mod:`metaauto.tasks.omniglot_archive`), their official md5 being checked on the bytes we download.

The sha256 sums of the MovieLens and heart-disease files are those of the copies the test suite reads
(MovieLens latest-small as released in 2018-09: 100,836 ratings; UCI's ``processed.*.data``). If a
publisher changes a file, fetching fails with both digests in the message instead of handing over data
that the recorded results were not measured on.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from metaauto.config import data_dir as resolve_data_dir
from metaauto.errors import CollectionError

OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{archive}.zip"
OMNIGLOT_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
MOVIELENS_SHA256 = {
    "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
    "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
    "tags.csv": "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",
    "links.csv": "97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31",
}
HEART_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/heart-disease/{name}"
HEART_SHA256 = {
    "processed.cleveland.data": "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8",
    "processed.hungarian.data": "d1ad108f785768cd3d7e82dc522e6f5a61eea93cccfb3a46ee8076f73fc3d796",
    "processed.switzerland.data": "834a405ccf5b66ab4056bb77794adc8df0b7125186454c0a1d002d33c6c3b314",
    "processed.va.data": "e7c93d8d0d2acdadfa4c5e8de768e2191e7f618b952e29623f1f0d5949ff6b8f",
}


@dataclass(frozen=True)
class Fetched:
    """What :func:`fetch` did for one dataset: ``"present"`` (a valid local copy) or ``"downloaded"``."""

    dataset: str
    path: Path
    action: str
    files: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.dataset}: {self.action} ({len(self.files)} files) in {self.path}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str) -> None:
    actual = sha256(path)
    if actual != expected:
        raise CollectionError(f"{path} has sha256 {actual}, expected {expected}: not the published file "
                              "(a different release, a partial copy or an edit); remove it and fetch again")


def _download(url: str, known_hash: str, directory: Path, name: str, progress: bool) -> Path:
    """One file through pooch (hash checked before the file is kept)."""
    import pooch

    try:
        return Path(pooch.retrieve(url, known_hash=known_hash, fname=name, path=directory, progressbar=progress))
    except ValueError as exc:  # pooch's hash mismatch
        raise CollectionError(f"download of {url} failed its hash check ({exc}); nothing was kept") from exc
    except Exception as exc:  # requests' connection errors and HTTP status errors
        raise CollectionError(f"could not download {url} into {directory}: {type(exc).__name__}: {exc}") from exc


def _writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CollectionError(f"cannot create the data directory {directory}: {exc.strerror}") from exc
    if not os.access(directory, os.W_OK):
        raise CollectionError(f"the data directory {directory} is not writable; choose another with --data-dir "
                              "or METAAUTO_DATA_DIR")


def fetch_omniglot(root: Path, progress: bool = True) -> Fetched:
    from metaauto.tasks.omniglot_archive import read_layout

    directory = root / "omniglot"
    names = tuple(f"{archive}.zip" for archive in OMNIGLOT_MD5)
    if all((directory / name).is_file() for name in names):
        for archive in OMNIGLOT_MD5:
            read_layout(directory / f"{archive}.zip", archive)  # raises CollectionError naming what is wrong
        return Fetched("omniglot", directory, "present", names)
    _writable(directory)
    for archive, md5 in OMNIGLOT_MD5.items():
        if not (directory / f"{archive}.zip").is_file():
            _download(OMNIGLOT_URL.format(archive=archive), f"md5:{md5}", directory, f"{archive}.zip", progress)
    return Fetched("omniglot", directory, "downloaded", names)


def fetch_movielens(root: Path, progress: bool = True) -> Fetched:
    directory = root / "movielens" / "ml-latest-small"
    names = tuple(MOVIELENS_SHA256)
    if all((directory / name).is_file() for name in names):
        for name, expected in MOVIELENS_SHA256.items():
            _check_sha256(directory / name, expected)
        return Fetched("movielens", directory, "present", names)
    _writable(directory.parent)
    with tempfile.TemporaryDirectory(dir=directory.parent, prefix=".ml-latest-small.") as tmp:
        import zipfile

        # GroupLens publishes no stable hash of the zip itself: its members are checked instead, before
        # anything is moved into place
        archive = _download(MOVIELENS_URL, None, Path(tmp), "ml-latest-small.zip", progress)  # type: ignore[arg-type]
        staged = Path(tmp) / "staged"
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staged)
        except zipfile.BadZipFile as exc:
            raise CollectionError(f"the download of {MOVIELENS_URL} is not a zip file: {exc}") from exc
        extracted = staged / "ml-latest-small"
        for name, expected in MOVIELENS_SHA256.items():
            if not (extracted / name).is_file():
                raise CollectionError(f"{MOVIELENS_URL} holds no ml-latest-small/{name}")
            _check_sha256(extracted / name, expected)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(extracted, directory)
    return Fetched("movielens", directory, "downloaded", names)


def fetch_heart_disease(root: Path, progress: bool = True) -> Fetched:
    directory = root / "heart-disease"
    names = tuple(HEART_SHA256)
    missing = [name for name in names if not (directory / name).is_file()]
    for name in set(names) - set(missing):
        _check_sha256(directory / name, HEART_SHA256[name])
    if not missing:
        return Fetched("heart-disease", directory, "present", names)
    _writable(directory)
    for name in missing:
        _download(HEART_URL.format(name=name), f"sha256:{HEART_SHA256[name]}", directory, name, progress)
    return Fetched("heart-disease", directory, "downloaded", names)


FETCHERS: dict[str, Callable[[Path, bool], Fetched]] = {
    "omniglot": fetch_omniglot,
    "movielens": fetch_movielens,
    "heart-disease": fetch_heart_disease,
}


def fetch(datasets: Iterable[str] | str = tuple(FETCHERS), data_dir: str | os.PathLike | None = None,
          progress: bool = True) -> list[Fetched]:
    """Make ``data_dir`` (default ``$METAAUTO_DATA_DIR``) hold ``datasets``; see the module docstring.

    Every name is checked before anything is downloaded, so a typo costs nothing.
    """
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    unknown = [n for n in names if n not in FETCHERS]
    if unknown:
        raise CollectionError(f"unknown dataset(s) {', '.join(map(repr, unknown))}; expected {', '.join(FETCHERS)}")
    root = Path(resolve_data_dir(data_dir)).expanduser() if data_dir is None else Path(data_dir).expanduser()
    return [FETCHERS[name](root, progress) for name in names]
