"""A meta-model and its scikit-learn face: :class:`MetaModel` adapts to a task's support set and returns a
fitted :class:`FewShotClassifier` (or :class:`FewShotRegressor`).

A meta-model is not a predictor: it becomes one for a task once it has seen that task's support set.
``fit(X_support, y_support)`` is the few-shot part: the support set of one task, a handful of labelled
rows. The estimator keeps it and adapts the meta-model to it when predicting (metric learners embed the
support and query sets together, and gradient learners re-run their few inner steps, so predictions
are a deterministic function of the support set and the query rows). Parameters are stored untouched
by ``__init__`` and the model is loaded in ``fit``, so the estimators clone, grid-search, cross-validate
and sit in pipelines like any other::

    from metaauto.downstream.sklearn import FewShotClassifier
    clf = FewShotClassifier(model_uri="models:/omniglot-5w1s@champion").fit(X_support, y_support)
    clf.predict(X_query)

    model = metaauto.load("models:/omniglot-5w1s@champion")   # a MetaModel
    clf = model.adapt(X_support, y_support)

:class:`MetaModel` and the estimators share this module because each needs the other (``adapt`` builds
an estimator, an estimator given a URI loads a model); the MLflow pyfunc (:mod:`metaauto.downstream.pyfunc`)
uses the same numeric core (:meth:`MetaModel.adapt_predict`). Weights come from ``model.safetensors``
and the architecture from ``learner.json``; nothing is unpickled.

Loaded models are cached per process by the storage location a URI resolves to: an alias that moves is
picked up by the next ``fit``, while refitting on the same version does not download it again.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from metaauto.downstream.spec import IO_KEY, LEARNER_ARTIFACT, InputSpec, ModelInputError
from metaauto.learners import Learner, load_learner, read_learner_info

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

    @classmethod
    def from_uri(cls, uri: str | os.PathLike, tracking_uri: str | None = None) -> "MetaModel":
        """See :func:`metaauto.downstream.loading.load`."""
        from metaauto.tracking.store import get_client
        from metaauto.tracking.uris import download_model

        uri = os.fspath(uri)
        client = get_client(tracking_uri) if uri.startswith(("models:", "runs:")) else None
        return cls.from_directory(download_model(uri, client=client), source=uri)

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
        """A fitted :class:`FewShotClassifier` (or :class:`FewShotRegressor`) for this task."""
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


_CACHE: dict[tuple[str, str], MetaModel] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 8


def _load_cached(uri: str, tracking_uri: str | None) -> MetaModel:
    from metaauto.tracking.store import get_client
    from metaauto.tracking.uris import artifact_location, download_model

    client = get_client(tracking_uri) if uri.startswith(("models:", "runs:")) else None
    location = artifact_location(uri, client) if client is not None else uri
    key = (client.tracking_uri if client is not None else "", location)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    model = MetaModel.from_directory(download_model(uri, client=client), source=uri)
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = model
    return model


class _FewShotBase(BaseEstimator):
    _task_type: str

    def __init__(
        self,
        model_uri: str | None = None,
        *,
        inner_steps: int | None = None,
        model: MetaModel | None = None,
        tracking_uri: str | None = None,
    ) -> None:
        self.model_uri = model_uri
        self.inner_steps = inner_steps
        self.model = model
        self.tracking_uri = tracking_uri

    def _meta_model(self) -> MetaModel:
        if (self.model is None) == (self.model_uri is None):
            raise ValueError(f"{type(self).__name__} needs exactly one of model_uri= and model=")
        meta = self.model if self.model is not None else _load_cached(str(self.model_uri), self.tracking_uri)
        if meta.task_type != self._task_type:
            raise ValueError(
                f"{type(self).__name__} needs a {self._task_type} meta-model; {meta.source or 'the model'} "
                f"solves {meta.task_type} tasks"
            )
        return meta

    def _check_width(self, meta: MetaModel, X: np.ndarray) -> None:
        try:
            meta.check_features(X, where="X_support")
        except ModelInputError as exc:
            raise ValueError(str(exc)) from None

    def _query(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float32)


class FewShotClassifier(ClassifierMixin, _FewShotBase):
    """A classifier for one task, adapted from a meta-trained classification model.

    Parameters
    ----------
    model_uri:
        ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/model`` or a model directory.
    inner_steps:
        Adaptation steps of gradient-based learners (default: the learner's evaluation setting).
    model:
        An already loaded :class:`MetaModel`, instead of ``model_uri``.
    tracking_uri:
        MLflow store to resolve ``model_uri`` against (default: ``MLFLOW_TRACKING_URI`` or metaauto's).

    Attributes
    ----------
    classes_ : ndarray of the support labels, sorted.
    n_features_in_ : int
    meta_model_ : the :class:`MetaModel` in use.
    """

    _task_type = "classification"

    def fit(self, X: Any, y: Any) -> "FewShotClassifier":
        """Keep the support set ``(X, y)``; every class to predict must appear in it."""
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        meta = self._meta_model()
        self._check_width(meta, X)
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"the support set holds a single class ({classes[0]!r}); few-shot tasks need at least 2")
        if meta.spec.max_ways is not None and len(classes) > meta.spec.max_ways:
            raise ValueError(
                f"the support set has {len(classes)} classes; this model solves tasks of at most {meta.spec.max_ways}"
            )
        self.classes_ = classes
        self.meta_model_ = meta
        self.support_X_ = X
        self.support_codes_ = codes.astype(np.int64)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[n, len(classes_)]`` in the order of ``classes_``."""
        X = self._query(X)
        return self.meta_model_.adapt_predict(self.support_X_, self.support_codes_, X, self.inner_steps)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class FewShotRegressor(RegressorMixin, _FewShotBase):
    """A regressor for one task, adapted from a meta-trained regression model (parameters as
    :class:`FewShotClassifier`). ``y`` is 1-D for scalar targets or ``[n, target_dim]``."""

    _task_type = "regression"

    def fit(self, X: Any, y: Any) -> "FewShotRegressor":
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=True, multi_output=True)
        meta = self._meta_model()
        self._check_width(meta, X)
        width = 1 if y.ndim == 1 else y.shape[1]
        if width != (meta.spec.target_dim or 1):
            raise ValueError(f"y has {width} target(s) per row; this model predicts {meta.spec.target_dim}")
        self.meta_model_ = meta
        self.support_X_ = X
        self.support_y_ = np.asarray(y, dtype=np.float32)
        return self

    def predict(self, X: Any) -> np.ndarray:
        X = self._query(X)
        out = self.meta_model_.adapt_predict(self.support_X_, self.support_y_, X, self.inner_steps)
        return out[:, 0] if self.support_y_.ndim == 1 else out
