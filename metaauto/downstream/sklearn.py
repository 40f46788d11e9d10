"""scikit-learn estimators backed by a meta-trained model.

``fit(X_support, y_support)`` is the few-shot part: the support set of one task, a handful of labelled
rows. The estimator keeps it and adapts the meta-model to it when predicting (metric learners embed the
support and query sets together, and gradient learners re-run their few inner steps, so predictions
are a deterministic function of the support set and the query rows). Parameters are stored untouched
by ``__init__`` and the model is loaded in ``fit``, so the estimators clone, grid-search, cross-validate
and sit in pipelines like any other::

    from metaauto.downstream.sklearn import FewShotClassifier
    clf = FewShotClassifier(model_uri="models:/omniglot-5w1s@champion").fit(X_support, y_support)
    clf.predict(X_query)

Loaded models are cached per process by the storage location a URI resolves to: an alias that moves is
picked up by the next ``fit``, while refitting on the same version does not download it again.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from metaauto.downstream.loading import MetaModel, ModelInputError

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
        An already loaded :class:`~metaauto.downstream.loading.MetaModel`, instead of ``model_uri``.
    tracking_uri:
        MLflow store to resolve ``model_uri`` against (default: ``MLFLOW_TRACKING_URI`` or metaauto's).

    Attributes
    ----------
    classes_ : ndarray of the support labels, sorted.
    n_features_in_ : int
    meta_model_ : the :class:`~metaauto.downstream.loading.MetaModel` in use.
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
