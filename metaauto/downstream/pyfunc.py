"""The meta-model as an MLflow pyfunc: few-shot tasks in a DataFrame in, query predictions out.

Request schema (one row per example; any number of tasks per request)
----------------------------------------------------------------------
``task`` (string)
    Task id; rows with the same id form one task, which is adapted to independently of the others.
``label`` (optional)
    The label of a *support* row. Query rows leave it empty (null / missing). Classification labels may
    be strings or numbers and come back as given; regression labels are numbers. A model with a
    ``target_dim > 1`` takes ``label_0 ... label_{d-1}`` instead.
feature columns (double)
    Tabular models: one column per feature, named as in the meta-training table (standardisation is
    applied by the model: send raw values). Image models: ``px_0 ... px_{C*H*W-1}``, the image's pixel
    intensities in ``[0, 1]`` in row-major ``(channel, row, column)`` order; Omniglot models take 28x28
    grayscale drawings with ink = 1.0 and paper = 0.0.

Each task needs at least one support row, at least one query row and, for classification, support rows
of at least two classes (and no more classes than a gradient learner's head has outputs).

Response (one row per query row)
--------------------------------
``task``, ``row`` (position of the query row in the request), ``prediction`` (a label, or a number for
regression), and for classification ``probability`` (of the predicted label) and ``probabilities``
(label -> probability over the task's support labels).

A request that breaks these rules raises :class:`~mlflow.exceptions.MlflowException` with
``INVALID_PARAMETER_VALUE``, which MLflow's scoring server answers with HTTP 400 and the message.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import AnyType, Map

from metaauto.downstream.sklearn import MetaModel
from metaauto.downstream.spec import LEARNER_ARTIFACT, ModelInputError
from metaauto.tasks.batch import TaskBatch

TASK = "task"
LABEL = "label"
ROW = "row"


def label_columns(model_or_spec: Any) -> list[str]:
    spec = getattr(model_or_spec, "spec", model_or_spec)
    if spec.task_type == "regression" and (spec.target_dim or 1) > 1:
        return [f"{LABEL}_{j}" for j in range(spec.target_dim)]
    return [LABEL]


def input_schema(model: MetaModel) -> Schema:
    spec = model.spec
    label_type = AnyType() if spec.task_type == "classification" else DataType.double
    return Schema(
        [ColSpec(DataType.string, TASK)]
        + [ColSpec(label_type, name, required=False) for name in label_columns(spec)]
        + [ColSpec(DataType.double, name) for name in spec.feature_names]
    )


def output_schema(model: MetaModel) -> Schema:
    spec = model.spec
    columns = [ColSpec(DataType.string, TASK), ColSpec(DataType.long, ROW)]
    if spec.task_type == "classification":
        columns += [
            ColSpec(AnyType(), "prediction"),
            ColSpec(DataType.double, "probability"),
            ColSpec(Map(DataType.double), "probabilities"),
        ]
    elif (spec.target_dim or 1) > 1:
        columns += [ColSpec(DataType.double, f"prediction_{j}") for j in range(spec.target_dim)]
    else:
        columns.append(ColSpec(DataType.double, "prediction"))
    return Schema(columns)


def episode_frame(model: MetaModel, batch: TaskBatch, tasks: int = 1, queries: int | None = None) -> pd.DataFrame:
    """Tasks of a :class:`TaskBatch` in the request schema (support rows labelled, query rows not).

    Classification labels become ``"class_<k>"`` strings; regression targets are written as given.
    Used for the logged input example and in tests, it also documents the schema by construction.
    """
    spec = model.spec
    frames = []
    for t in range(min(tasks, batch.tasks)):
        qx, qy = batch.query_x[t], batch.query_y[t]
        if queries is not None:
            qx, qy = qx[:queries], qy[:queries]
        x = np.concatenate([batch.support_x[t].reshape(len(batch.support_x[t]), -1).numpy(), qx.reshape(len(qx), -1).numpy()])
        frame = pd.DataFrame(x.astype(np.float64), columns=spec.feature_names)
        if spec.standardization is not None:
            # TaskBatch features are standardised; requests carry raw values
            mean = np.asarray(spec.standardization["mean"])
            std = np.asarray(spec.standardization["std"])
            frame[spec.feature_names] = frame[spec.feature_names].to_numpy() * std + mean
        n_support = len(batch.support_x[t])
        if spec.task_type == "classification":
            labels = [f"class_{int(v)}" for v in batch.support_y[t]] + [None] * len(qx)
            frame.insert(0, LABEL, pd.Series(labels, dtype=object))
        else:
            support = batch.support_y[t].reshape(n_support, -1).numpy().astype(np.float64)
            for j, name in enumerate(label_columns(spec)):
                frame.insert(j, name, np.concatenate([support[:, j], np.full(len(qx), np.nan)]))
        frame.insert(0, TASK, f"task-{t}")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _canonical(label: Any, where: str) -> Any:
    if isinstance(label, (bool, np.bool_)):
        return bool(label)
    if isinstance(label, (int, np.integer)):
        return int(label)
    if isinstance(label, (float, np.floating)):
        return int(label) if float(label).is_integer() else float(label)
    if isinstance(label, str):
        return label
    raise ModelInputError(f"{where}: label {label!r} is neither a string nor a number")


def _features(model: MetaModel, frame: pd.DataFrame) -> np.ndarray:
    names = model.spec.feature_names
    missing = [name for name in names if name not in frame.columns]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ModelInputError(
            f"the request has {len(names) - len(missing)} of the model's {len(names)} feature columns; missing: {shown}"
        )
    try:
        X = frame[names].to_numpy(dtype=np.float32)
    except (TypeError, ValueError):
        bad = next(name for name in names if not pd.api.types.is_numeric_dtype(frame[name]))
        raise ModelInputError(f"feature column {bad!r} holds non-numeric values") from None
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise ModelInputError(
            f"row {row} (task {frame[TASK].iloc[row]!r}): feature {names[col]!r} is {X[row, col]} (NaN or infinite)"
        )
    return X


def _classify(model: MetaModel, frame: pd.DataFrame, X: np.ndarray, support: np.ndarray, query: np.ndarray,
              task_id: Any, names: list[str], inner_steps: int | None) -> pd.DataFrame:
    """One classification task's query rows: the predicted label, its probability and all of them."""
    where = f"task {task_id!r}"
    labels = [_canonical(v, f"{where}, row {r}") for r, v in zip(support, frame[LABEL].to_numpy()[support])]
    classes = sorted(set(labels), key=lambda v: (isinstance(v, str), v))
    if len(classes) < 2:
        raise ModelInputError(f"{where}: all support rows have label {classes[0]!r}; a task needs at least 2 classes")
    code = {c: i for i, c in enumerate(classes)}
    proba = model.adapt_predict(X[support], np.array([code[v] for v in labels]), X[query], inner_steps)
    best = proba.argmax(axis=1)
    return pd.DataFrame({
        TASK: str(task_id),
        ROW: query.astype(np.int64),
        "prediction": pd.Series([classes[i] for i in best], dtype=object),
        "probability": proba[np.arange(len(query)), best],
        "probabilities": [{str(c): float(p) for c, p in zip(classes, row)} for row in proba],
    })


def _regress(model: MetaModel, frame: pd.DataFrame, X: np.ndarray, support: np.ndarray, query: np.ndarray,
             task_id: Any, names: list[str], inner_steps: int | None) -> pd.DataFrame:
    """One regression task's query rows: ``prediction`` (or ``prediction_<j>`` per target)."""
    where = f"task {task_id!r}"
    incomplete = [n for n in names if n not in frame.columns or frame[n].iloc[support].isna().any()]
    if incomplete:
        raise ModelInputError(f"{where}: support rows lack {', '.join(incomplete)}")
    try:
        y = frame[names].iloc[support].to_numpy(dtype=np.float32)
    except (TypeError, ValueError):
        raise ModelInputError(f"{where}: regression labels must be numbers") from None
    if not np.isfinite(y).all():
        raise ModelInputError(f"{where}: a support label is infinite")
    pred = model.adapt_predict(X[support], y, X[query], inner_steps)
    columns = ["prediction"] if len(names) == 1 else [f"prediction_{j}" for j in range(len(names))]
    out = pd.DataFrame({TASK: str(task_id), ROW: query.astype(np.int64)})
    for j, column in enumerate(columns):
        out[column] = pred[:, j]
    return out


def predict_frame(model: MetaModel, frame: pd.DataFrame, inner_steps: int | None = None) -> pd.DataFrame:
    """Adapt to every task of ``frame`` (request schema above) and predict its query rows."""
    if not isinstance(frame, pd.DataFrame):
        raise ModelInputError(f"expected a DataFrame in the request schema, got {type(frame).__name__}")
    if TASK not in frame.columns:
        raise ModelInputError(f"the request has no {TASK!r} column; every row must name its task")
    if len(frame) == 0:
        raise ModelInputError("the request holds no rows")
    frame = frame.reset_index(drop=True)
    if frame[TASK].isna().any():
        raise ModelInputError(f"row {int(np.flatnonzero(frame[TASK].isna())[0])} has no task id")
    X = _features(model, frame)
    names = label_columns(model)
    labelled = np.zeros(len(frame), dtype=bool)
    for name in names:
        if name in frame.columns:
            labelled |= frame[name].notna().to_numpy()
    classification = model.task_type == "classification"
    outputs = []
    for task_id, rows in frame.groupby(TASK, sort=False).indices.items():
        rows = np.asarray(rows)
        support, query = rows[labelled[rows]], rows[~labelled[rows]]
        where = f"task {task_id!r}"
        if len(support) == 0:
            raise ModelInputError(f"{where} has no support rows (rows with a {names[0]!r}): nothing to adapt to")
        if len(query) == 0:
            raise ModelInputError(f"{where} has no query rows (rows without a {names[0]!r}): nothing to predict")
        predict = _classify if classification else _regress
        outputs.append(predict(model, frame, X, support, query, task_id, names, inner_steps))
    return pd.concat(outputs, ignore_index=True)


class MetaLearnerPyfunc(PythonModel):
    """The pyfunc face of a saved learner: ``artifacts["learner"]`` is a ``save_learner`` directory.

    It is logged as *models from code* (``metaauto/tracking/model_code.py`` names this class), so the
    logged model holds weights, JSON and that short script, never a pickle.
    """

    def load_context(self, context: Any) -> None:
        self.model = MetaModel.from_directory(context.artifacts[LEARNER_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None):  # noqa: ANN001 (MLflow reads these hints)
        try:
            if not isinstance(model_input, pd.DataFrame):
                model_input = pd.DataFrame(model_input)
            return predict_frame(self.model, model_input)
        except ModelInputError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None
