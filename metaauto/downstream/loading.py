"""Load a trained meta-learner from MLflow (or a directory) and adapt it to new tasks.

A meta-model is not a predictor: it becomes one for a task once it has seen that task's support set.
:func:`load` therefore returns a :class:`MetaModel` whose :meth:`~MetaModel.adapt` takes the support set
``(X, y)`` and returns a fitted scikit-learn estimator for that task::

    model = metaauto.load("models:/omniglot-5w1s@champion")
    clf = model.adapt(X_support, y_support)
    clf.predict(X_query), clf.predict_proba(X_query), clf.score(X_query, y_query)

Rows of ``X`` are flat feature vectors in the model's input encoding (:class:`InputSpec`): tabular
features in the order of ``feature_names``, images as ``channels * height * width`` pixel intensities
in row-major order. Weights come from ``model.safetensors`` and the architecture from ``learner.json``;
nothing is unpickled.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from metaauto.errors import MetaautoError
from metaauto.learners import Learner, load_learner, read_learner_info

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


class MetaModel:
    """A meta-trained learner plus its :class:`InputSpec`; :meth:`adapt` turns it into a task's estimator."""

    def __init__(self, learner: Learner, spec: InputSpec, source: str | None = None) -> None:
        self.learner = learner.eval()
        self.spec = spec
        self.source = source

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, source: str | None = None) -> "MetaModel":
        """A saved learner directory, or an MLflow model directory holding one under ``artifacts/``."""
        directory = Path(directory)
        learner_dir = _find_learner_dir(directory)
        info = read_learner_info(learner_dir)
        io = (info.get("extra") or {}).get(IO_KEY)
        if io is None:
            raise ModelInputError(
                f"{learner_dir / 'learner.json'} has no input specification (extra.{IO_KEY}); "
                "save the learner with metaauto.tracking.save_meta_model"
            )
        return cls(load_learner(learner_dir, map_location="cpu"), InputSpec.from_dict(io), source or str(directory))

    @property
    def task_type(self) -> str:
        return self.spec.task_type

    @property
    def n_features_in(self) -> int:
        return self.spec.n_features

    def __deepcopy__(self, memo: dict) -> "MetaModel":
        # Adapting never changes the meta-parameters, so copies (sklearn's clone) may share them.
        return self

    def __repr__(self) -> str:
        return f"MetaModel({self.learner.name}, {self.task_type}, {self.n_features_in} features, source={self.source!r})"

    # -- the numeric core shared by scikit-learn estimators and the pyfunc model ------------------

    def check_features(self, X: np.ndarray, where: str = "X") -> np.ndarray:
        """``X`` as float32 ``[n, n_features]``; raises naming the first NaN/inf row or the width mismatch."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in:
            got = X.shape[1] if X.ndim == 2 else f"an array of shape {X.shape}"
            raise ModelInputError(
                f"{where} has {got} features, this model expects {self.n_features_in} "
                f"({_describe_features(self.spec.feature_names)})"
            )
        bad = ~np.isfinite(X)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise ModelInputError(f"{where} row {row}, feature {self.spec.feature_names[col]!r} is {X[row, col]} (NaN or infinite)")
        return X

    def _inputs(self, X: np.ndarray) -> torch.Tensor:
        scaler = self.spec.standardization
        if scaler is not None:
            X = (X - np.asarray(scaler["mean"], dtype=np.float32)) / np.asarray(scaler["std"], dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).reshape(-1, *self.spec.input_shape)

    def adapt_predict(
        self, X_support: np.ndarray, y_support: np.ndarray, X_query: np.ndarray, inner_steps: int | None = None
    ) -> np.ndarray:
        """Adapt on one task's support set and return the query outputs.

        Classification: ``y_support`` holds class codes ``0..k-1`` and the result is ``[n_query, k]``
        class probabilities. Regression: ``y_support`` is ``[n_support]`` or ``[n_support, target_dim]``
        and the result ``[n_query, target_dim]`` predictions. Inputs must already be checked.
        """
        learner = self.learner
        support_x, query_x = self._inputs(X_support), self._inputs(X_query)
        if self.task_type == "classification":
            codes = np.asarray(y_support, dtype=np.int64)
            k = int(codes.max()) + 1
            if self.spec.max_ways is not None and k > self.spec.max_ways:
                raise ModelInputError(
                    f"the support set has {k} classes, but this {learner.name} model's head has "
                    f"{self.spec.max_ways} outputs: it solves tasks of at most {self.spec.max_ways} classes"
                )
            # episodes are ordered by class during meta-training; keep that convention
            order = np.argsort(codes, kind="stable")
            support_x, support_y = support_x[torch.from_numpy(order)], torch.from_numpy(codes[order])
        else:
            support_y = torch.as_tensor(np.asarray(y_support, dtype=np.float32)).reshape(len(support_x), -1)
        grad_mode = torch.enable_grad if learner.family == "gradient" else torch.no_grad
        with grad_mode():
            predict = learner.adapt(support_x, support_y, inner_steps=inner_steps)
            output = predict(query_x).detach().float()
        if self.task_type == "classification":
            return torch.softmax(output[:, :k], dim=-1).numpy().astype(np.float64)
        return output.reshape(len(query_x), -1).numpy().astype(np.float64)

    # -- the public entry point ------------------------------------------------------------------

    def adapt(self, X_support: Any, y_support: Sequence[Any], inner_steps: int | None = None) -> Any:
        """A fitted :class:`~metaauto.downstream.sklearn.FewShotClassifier` (or ``Regressor``) for this task."""
        from metaauto.downstream.sklearn import FewShotClassifier, FewShotRegressor

        estimator = FewShotClassifier if self.task_type == "classification" else FewShotRegressor
        return estimator(model=self, inner_steps=inner_steps).fit(X_support, y_support)


def _describe_features(names: Sequence[str]) -> str:
    if len(names) <= 6:
        return ", ".join(names)
    return f"{', '.join(names[:3])}, ..., {names[-1]}"


def _find_learner_dir(directory: Path) -> Path:
    if (directory / "learner.json").is_file():
        return directory
    candidate = directory / "artifacts" / LEARNER_ARTIFACT
    if (candidate / "learner.json").is_file():
        return candidate
    raise ModelInputError(
        f"{directory} holds neither a saved learner (learner.json) nor an MLflow model logged by metaauto "
        f"(artifacts/{LEARNER_ARTIFACT}/learner.json)"
    )


def load(uri: str | os.PathLike, tracking_uri: str | None = None) -> MetaModel:
    """Load a meta-model from ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/model``,
    an MLflow model directory, or a directory written by ``save_learner``.

    ``models:/`` and ``runs:/`` URIs are resolved against ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI``
    or metaauto's embedded store, see :func:`metaauto.tracking.tracking_uri`).
    """
    from metaauto.tracking.store import get_client
    from metaauto.tracking.uris import download_model

    uri = os.fspath(uri)
    client = get_client(tracking_uri) if uri.startswith(("models:", "runs:")) else None
    return MetaModel.from_directory(download_model(uri, client=client), source=uri)
