"""Load a trained meta-learner from MLflow (or a directory); ``metaauto.load`` is this function.

A meta-model is not a predictor: it becomes one for a task once it has seen that task's support set.
:func:`load` therefore returns a :class:`~metaauto.downstream.sklearn.MetaModel` whose
:meth:`~metaauto.downstream.sklearn.MetaModel.adapt` takes the support set ``(X, y)`` and returns a
fitted scikit-learn estimator for that task::

    model = metaauto.load("models:/omniglot-5w1s@champion")
    clf = model.adapt(X_support, y_support)
    clf.predict(X_query), clf.predict_proba(X_query), clf.score(X_query, y_query)

Rows of ``X`` are flat feature vectors in the model's input encoding
(:class:`~metaauto.downstream.spec.InputSpec`). Weights come from ``model.safetensors`` and the
architecture from ``learner.json``; nothing is unpickled.
"""

from __future__ import annotations

import os

from metaauto.downstream.sklearn import MetaModel


def load(uri: str | os.PathLike, tracking_uri: str | None = None) -> MetaModel:
    """Load a meta-model from ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/model``,
    an MLflow model directory, or a directory written by ``save_learner``.

    ``models:/`` and ``runs:/`` URIs are resolved against ``tracking_uri`` (default: ``MLFLOW_TRACKING_URI``
    or metaauto's embedded store, see :func:`metaauto.tracking.tracking_uri`).
    """
    return MetaModel.from_uri(uri, tracking_uri)
