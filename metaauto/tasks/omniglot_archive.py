"""Reading, validating, downloading and caching the official Omniglot zips.

Decoding the ~32,000 PNGs takes seconds, and training scripts, tests and sweeps load the dataset over
and over, so each archive is decoded once into ``cache_dir()/omniglot/`` as a ``uint8`` array. The cache
file is named after a content digest of the zip and the image size: a different or modified archive
gets a different cache file, and the digest (not the file's mtime) is what decides, so copying a dataset
between machines never serves a stale decode. Cache files are written to a temporary name and moved into
place with :func:`os.replace`, so an interrupted decode never leaves a partial cache behind.

A local copy is validated by its *structure* (the official alphabets, their character counts, 20
drawings per character, decodable PNGs), not by the md5 of the zip: re-packed copies of the official
images are byte-different but pixel-identical, and rejecting them would only push users to download
what they already have. Downloading (with the official md5 sums checked on the bytes we fetch) lives in
:mod:`metaauto.tasks.datasets`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from metaauto.config import cache_dir
from metaauto.errors import CollectionError

BACKGROUND = "images_background"
EVALUATION = "images_evaluation"
DRAWINGS = 20
#: alphabet -> number of characters, as released by Lake et al. (2015)
ALPHABETS: dict[str, dict[str, int]] = {
    BACKGROUND: {
        "Alphabet_of_the_Magi": 20, "Anglo-Saxon_Futhorc": 29, "Arcadian": 26, "Armenian": 41,
        "Asomtavruli_(Georgian)": 40, "Balinese": 24, "Bengali": 46,
        "Blackfoot_(Canadian_Aboriginal_Syllabics)": 14, "Braille": 26, "Burmese_(Myanmar)": 34,
        "Cyrillic": 33, "Early_Aramaic": 22, "Futurama": 26, "Grantha": 43, "Greek": 24, "Gujarati": 48,
        "Hebrew": 22, "Inuktitut_(Canadian_Aboriginal_Syllabics)": 16, "Japanese_(hiragana)": 52,
        "Japanese_(katakana)": 47, "Korean": 40, "Latin": 26, "Malay_(Jawi_-_Arabic)": 40,
        "Mkhedruli_(Georgian)": 41, "N_Ko": 33, "Ojibwe_(Canadian_Aboriginal_Syllabics)": 14,
        "Sanskrit": 42, "Syriac_(Estrangelo)": 23, "Tagalog": 17, "Tifinagh": 55,
    },
    EVALUATION: {
        "Angelic": 20, "Atemayar_Qelisayer": 26, "Atlantean": 26, "Aurek-Besh": 26, "Avesta": 26,
        "Ge_ez": 26, "Glagolitic": 45, "Gurmukhi": 45, "Kannada": 41, "Keble": 26, "Malayalam": 47,
        "Manipuri": 40, "Mongolian": 30, "Old_Church_Slavonic_(Cyrillic)": 45, "Oriya": 46,
        "Sylheti": 28, "Syriac_(Serto)": 23, "Tengwar": 25, "Tibetan": 42, "ULOG": 26,
    },
}


@dataclass(frozen=True)
class DecodedArchive:
    """One archive as ``uint8`` images ``[characters, 20, size, size]`` (strokes 255, background 0)."""

    images: np.ndarray
    #: ``"Alphabet/characterNN"`` for each row of ``images``, sorted
    characters: tuple[str, ...]

    @property
    def alphabets(self) -> tuple[str, ...]:
        return tuple(c.split("/", 1)[0] for c in self.characters)


def archive_path(root: Path, archive: str) -> Path:
    """The local zip of ``archive`` under ``root``; a missing one is an error that says how to get it."""
    path = root / "omniglot" / f"{archive}.zip"
    if not path.is_file():
        raise CollectionError(
            f"Omniglot archive {path} not found; put the official {archive}.zip there, run "
            f"`metaauto data fetch omniglot --data-dir {root}`, or pass download=True"
        )
    return path


def file_digest(path: Path) -> str:
    """Content digest of a source file; cheap next to decoding (~20 ms for both zips)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


_MEMBER = re.compile(r"^(?P<root>[^/]+)/(?P<alphabet>[^/]+)/(?P<character>[^/]+)/[^/]+\.png$")


def read_layout(path: Path, archive: str) -> dict[str, list[str]]:
    """``"Alphabet/characterNN" -> sorted PNG members``, after checking the official structure."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CollectionError(f"{path} is not a readable zip archive ({exc})") from exc
    layout: dict[str, list[str]] = {}
    for name in names:
        match = _MEMBER.match(name)
        if match and match["root"] == archive:
            layout.setdefault(f"{match['alphabet']}/{match['character']}", []).append(name)
    expected = ALPHABETS[archive]
    found: dict[str, int] = {}
    for character in layout:
        alphabet = character.split("/", 1)[0]
        found[alphabet] = found.get(alphabet, 0) + 1
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CollectionError(f"{path}: alphabet(s) {', '.join(missing)} missing under {archive}/")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CollectionError(f"{path}: unexpected alphabet(s) {', '.join(unexpected)} under {archive}/")
    for alphabet, count in expected.items():
        if found[alphabet] != count:
            raise CollectionError(
                f"{path}: alphabet {alphabet} has {found[alphabet]} characters, the official set has {count}"
            )
    for character, members in layout.items():
        if len(members) != DRAWINGS:
            raise CollectionError(
                f"{path}: character {archive}/{character} has {len(members)} drawings, expected {DRAWINGS}"
            )
        members.sort()
    return dict(sorted(layout.items()))


def decode_archive(path: Path, archive: str, image_size: int) -> DecodedArchive:
    """Validate and decode every drawing of ``archive`` (no cache; see :func:`load_archive`).

    Single-threaded on purpose: measured on two cores, threads were slower (the per-image work is
    short and holds the GIL) and a two-process pool saved ~0.3 s of ~2.2 s for the background set,
    not worth forking a process that may hold torch's thread pools, for a once-per-machine decode.
    """
    layout = read_layout(path, archive)
    images = np.empty((len(layout), DRAWINGS, image_size, image_size), dtype=np.uint8)
    with zipfile.ZipFile(path) as zf, tqdm(
        total=len(layout) * DRAWINGS, desc=f"decode {path.name}", unit="img", leave=False
    ) as progress:
        for c, members in enumerate(layout.values()):
            for d, member in enumerate(members):
                try:
                    with Image.open(io.BytesIO(zf.read(member))) as image:
                        gray = image.convert("L")
                except (UnidentifiedImageError, OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                    raise CollectionError(f"{path}: member {member} cannot be decoded as a PNG ({exc})") from exc
                if gray.size != (image_size, image_size):
                    gray = gray.resize((image_size, image_size), Image.Resampling.BILINEAR)
                # Omniglot draws black strokes on white; invert so that strokes are 255 and background 0.
                images[c, d] = 255 - np.asarray(gray, dtype=np.uint8)
            progress.update(DRAWINGS)
    return DecodedArchive(images=images, characters=tuple(layout))


def cache_file(archive: str, digest: str, image_size: int) -> Path:
    return cache_dir() / "omniglot" / f"{archive}-{digest}-{image_size}px.npz"


def load_archive(path: Path, archive: str, image_size: int, digest: str) -> DecodedArchive:
    """The decoded archive, from the cache when a decode of these exact bytes at this size exists."""
    target = cache_file(archive, digest, image_size)
    if target.is_file():
        try:
            with np.load(target, allow_pickle=False) as cached:
                return DecodedArchive(images=cached["images"], characters=tuple(cached["characters"].tolist()))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable cache (e.g. a disk error): rebuild it below from the source
    decoded = decode_archive(path, archive, image_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, images=decoded.images, characters=np.array(decoded.characters))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return decoded
