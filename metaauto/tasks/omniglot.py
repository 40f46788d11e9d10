"""Omniglot (Lake et al., 2015) as N-way K-shot character-classification episodes.

Splits follow the official release and never mix the two archives: ``images_evaluation.zip`` is
meta-test; ``images_background.zip`` is divided into meta-train and meta-val by *whole alphabets*.
Splitting by alphabet (rather than by character) is what the background/evaluation boundary itself
does, so meta-val measures the same thing as meta-test, transfer to unseen writing systems, and model
selection on it is not flattered by sibling characters of a training alphabet. The default meta-val
alphabets are a fixed list (157 of the 964 background characters), so every run and every machine
agrees on the split without a seed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from metaauto.config import data_dir as resolve_data_dir
from metaauto.errors import CollectionError
from metaauto.tasks.base import SPLITS, PooledData, SplitSummary, TaskCollection
from metaauto.tasks.batch import TaskBatch
from metaauto.tasks.episodes import episode_labels, sample_subsets
from metaauto.tasks.datasets import fetch_omniglot
from metaauto.tasks.omniglot_archive import (
    ALPHABETS,
    BACKGROUND,
    DRAWINGS,
    EVALUATION,
    archive_path,
    file_digest,
    load_archive,
)
from metaauto.tasks.validation import check_episode

DEFAULT_VAL_ALPHABETS = ("Bengali", "Futurama", "Hebrew", "Korean", "Syriac_(Estrangelo)")
ROTATIONS = (0, 90, 180, 270)


class OmniglotCollection(TaskCollection):
    """Omniglot characters as classes; images ``[1, image_size, image_size]`` in ``[0, 1]``, strokes 1.

    Parameters
    ----------
    data_dir:
        Directory holding ``omniglot/images_background.zip`` and ``omniglot/images_evaluation.zip``
        (default: ``METAAUTO_DATA_DIR``).
    image_size:
        Side length the 105x105 drawings are resized to (bilinear).
    rotations:
        Add the 90/180/270-degree rotations of every character as classes of their own, in the
        character's split (the augmentation of Santoro et al. and of most MAML/ProtoNet results).
    val_alphabets:
        Background alphabets that form meta-val; the rest of the background set is meta-train.
    download:
        Fetch missing archives from the official repository and check their md5
        (:func:`metaauto.tasks.datasets.fetch_omniglot`). Present local copies are always used, validated
        by structure rather than md5 (see :mod:`.omniglot_archive`).
    """

    name = "omniglot"
    task_type = "classification"

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        *,
        image_size: int = 28,
        rotations: bool = False,
        val_alphabets: Sequence[str] = DEFAULT_VAL_ALPHABETS,
        download: bool = False,
    ) -> None:
        if int(image_size) < 1:
            raise CollectionError(f"omniglot: image_size must be a positive integer, got {image_size!r}")
        val_alphabets = tuple(sorted(set(val_alphabets)))
        unknown = [a for a in val_alphabets if a not in ALPHABETS[BACKGROUND]]
        if unknown:
            raise CollectionError(
                f"omniglot: val_alphabets {unknown} are not background alphabets; "
                f"choose from {sorted(ALPHABETS[BACKGROUND])}"
            )
        if not val_alphabets or len(val_alphabets) == len(ALPHABETS[BACKGROUND]):
            raise CollectionError("omniglot: val_alphabets must leave both meta-train and meta-val non-empty")
        self.image_size = int(image_size)
        self.rotations = bool(rotations)
        self.val_alphabets = val_alphabets
        self.input_shape = (1, self.image_size, self.image_size)

        root = resolve_data_dir(data_dir) if data_dir is None or not download else Path(data_dir).expanduser()
        if download:
            fetch_omniglot(Path(root))
        digests: dict[str, str] = {}
        decoded = {}
        for archive in (BACKGROUND, EVALUATION):
            path = archive_path(Path(root), archive)
            digests[archive] = file_digest(path)
            decoded[archive] = load_archive(path, archive, self.image_size, digests[archive])

        in_val = np.isin(decoded[BACKGROUND].alphabets, val_alphabets)
        parts = {
            "train": (decoded[BACKGROUND].images[~in_val], np.array(decoded[BACKGROUND].characters)[~in_val]),
            "val": (decoded[BACKGROUND].images[in_val], np.array(decoded[BACKGROUND].characters)[in_val]),
            "test": (decoded[EVALUATION].images, np.array(decoded[EVALUATION].characters)),
        }
        self._images: dict[str, np.ndarray] = {}
        self._classes: dict[str, tuple[str, ...]] = {}
        for split, (images, characters) in parts.items():
            if self.rotations:
                images = np.concatenate([np.rot90(images, k=r // 90, axes=(2, 3)) for r in ROTATIONS])
                characters = [f"{c}@rot{r}" for r in ROTATIONS for c in characters]
            self._images[split] = np.ascontiguousarray(images)
            self._classes[split] = tuple(str(c) for c in characters)

        options = {
            "collection": self.name,
            "sources": digests,
            "image_size": self.image_size,
            "rotations": self.rotations,
            "val_alphabets": list(self.val_alphabets),
        }
        self._fingerprint = hashlib.blake2b(json.dumps(options, sort_keys=True).encode(), digest_size=8).hexdigest()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def classes(self, split: str) -> tuple[str, ...]:
        """Class names of ``split`` (``"Alphabet/characterNN"``, with ``"@rotR"`` under rotations)."""
        self._check_split(self.name, split)
        return self._classes[split]

    def sample(
        self,
        split: str = "train",
        ways: int | None = 5,
        shots: int = 1,
        queries: int = 15,
        tasks: int = 32,
        seed: int = 0,
    ) -> TaskBatch:
        self._check_split(self.name, split)
        ways = check_episode(self.name, ways, shots, queries, tasks, classification=True)
        images = self._images[split]
        if ways > len(images):
            raise CollectionError(
                f"omniglot split {split!r} has {len(images)} classes, fewer than the {ways} ways requested"
            )
        per_class = shots + queries
        if per_class > DRAWINGS:
            raise CollectionError(
                f"omniglot class {self._classes[split][0]!r} (like every class of split {split!r}) has "
                f"{DRAWINGS} drawings, fewer than shots + queries = {per_class}"
            )
        rng = self._rng(seed, split)
        classes = sample_subsets(rng, np.full(tasks, len(images)), ways)
        drawings = sample_subsets(rng, np.full(tasks * ways, DRAWINGS), per_class).reshape(tasks, ways, per_class)
        picked = torch.from_numpy(images[classes[:, :, None], drawings]).unsqueeze(3)  # [T, N, K+Q, 1, H, W]
        x = picked.to(torch.float32).div_(255.0)
        side = x.shape[-3:]
        return TaskBatch(
            support_x=x[:, :, :shots].reshape(tasks, ways * shots, *side),
            support_y=torch.from_numpy(episode_labels(tasks, ways, shots).copy()),
            query_x=x[:, :, shots:].reshape(tasks, ways * queries, *side),
            query_y=torch.from_numpy(episode_labels(tasks, ways, queries).copy()),
            task_type="classification",
            ways=ways,
            shots=shots,
        )

    def pooled(self, split: str = "train", max_examples: int | None = None, seed: int = 0) -> PooledData:
        """Every drawing of ``split`` with class ids ``0..classes-1`` in the order of :meth:`classes`."""
        self._check_split(self.name, split)
        images = self._images[split]
        n_classes = images.shape[0]
        x = images.reshape(-1, 1, self.image_size, self.image_size)
        y = np.repeat(np.arange(n_classes, dtype=np.int64), DRAWINGS)
        if max_examples is not None and max_examples < len(y):
            keep = np.sort(self._rng(seed, split).permutation(len(y))[:max_examples])
            x, y = x[keep], y[keep]
        return PooledData(x=torch.from_numpy(x).to(torch.float32).div_(255.0), y=torch.from_numpy(y), n_classes=n_classes)

    def summary(self) -> dict[str, SplitSummary]:
        return {
            split: SplitSummary(
                units=len(self._classes[split]),
                examples=len(self._classes[split]) * DRAWINGS,
                unit_name="classes",
                extra={
                    "alphabets": len({c.split("/", 1)[0] for c in self._classes[split]}),
                    "rotations": self.rotations,
                    "image_size": self.image_size,
                },
            )
            for split in SPLITS
        }
