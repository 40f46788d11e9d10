"""What a meta-model expects as input (:class:`InputSpec`), recorded next to its weights when it is saved.

Rows of ``X`` are flat feature vectors in the model's input encoding: tabular features in the order of
``feature_names``, images as ``channels * height * width`` pixel intensities in row-major order.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from metaauto.errors import MetaautoError
from metaauto.learners import Learner

#: key of the input specification inside ``learner.json``'s ``extra``
IO_KEY = "io"
#: sub-directory of an MLflow model directory holding the saved learner (the pyfunc artifact)
LEARNER_ARTIFACT = "learner"


class ModelInputError(MetaautoError, ValueError):
    """Data given to a meta-model does not fit its input specification; the message says where."""


@dataclass
class InputSpec:
    """What a meta-model expects as input, recorded next to its weights when it is saved.

    ``standardization`` holds the per-feature ``mean``/``std`` the collection applied to tabular
    features during meta-training; raw features given to the model are standardised the same way.
    ``max_ways`` is the width of a gradient learner's classification head (tasks with more classes
    cannot be solved); metric learners handle any number of classes (``None``).
    """

    task_type: str
    input_shape: list[int]
    feature_names: list[str]
    encoding: str = "features"
    target_dim: int | None = None
    max_ways: int | None = None
    standardization: dict[str, list[float]] | None = None
    collection: dict[str, Any] = field(default_factory=dict)
    episode: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(math.prod(self.input_shape))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InputSpec":
        return cls(**data)

    @classmethod
    def for_collection(cls, collection: Any, learner: Learner, ways: int | None, shots: int, queries: int) -> "InputSpec":
        """The spec of a learner meta-trained on ``collection`` with ``ways``-way ``shots``-shot episodes."""
        shape = [int(v) for v in collection.input_shape]
        image = len(shape) == 3
        names = getattr(collection, "feature_cols", None)
        if image:
            names = [f"px_{i}" for i in range(math.prod(shape))]
        elif not names:
            names = ["x"] if shape == [1] else [f"x{i}" for i in range(math.prod(shape))]
        scaler = getattr(collection, "standardization", None)
        classification = collection.task_type == "classification"
        return cls(
            task_type=collection.task_type,
            input_shape=shape,
            feature_names=[str(n) for n in names],
            encoding="pixels" if image else "features",
            target_dim=None if classification else int(getattr(collection, "target_dim", None) or 1),
            max_ways=_head_width(learner) if classification else None,
            standardization=(
                {"mean": np.asarray(scaler.mean, dtype=float).tolist(), "std": np.asarray(scaler.std, dtype=float).tolist()}
                if scaler is not None
                else None
            ),
            collection={"name": collection.name, "fingerprint": collection.fingerprint},
            episode={"ways": ways if classification else None, "shots": shots, "queries": queries},
        )


def _head_width(learner: Learner) -> int | None:
    """Classes a gradient learner's head can output; ``None`` for metric learners (any number)."""
    if learner.family != "gradient":
        return None
    width = getattr(learner.model, "out_dim", None)
    return int(width) if width is not None else None
