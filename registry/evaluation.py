"""Metrics computed by the platform itself from an evaluation dataset, with scikit-learn's own functions."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from registry.models import Task

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse", "r2")


class EvaluationDataError(Exception):
    """The evaluation data cannot be used; the message says why."""


def read_evaluation_csv(data: bytes, target_column: str, max_rows: int) -> tuple[pd.DataFrame, pd.Series]:
    if not data:
        raise EvaluationDataError("the evaluation data is empty")
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except Exception as exc:
        raise EvaluationDataError(f"the evaluation data is not readable CSV: {exc}") from None
    if frame.empty:
        raise EvaluationDataError("the evaluation data has no rows")
    if len(frame) > max_rows:
        raise EvaluationDataError(f"the evaluation data has {len(frame)} rows; the limit is {max_rows}")
    if target_column not in frame.columns:
        raise EvaluationDataError(f"the evaluation data has no target column '{target_column}'")
    return frame.drop(columns=[target_column]), frame[target_column]


def features_for(frame: pd.DataFrame, signature: dict[str, Any]) -> pd.DataFrame:
    """The evaluation columns in signature order; missing columns are an error, extra ones are ignored."""
    names = [f["name"] for f in signature["inputs"]]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise EvaluationDataError(f"the evaluation data lacks the features: {', '.join(missing[:10])}")
    return frame[names]


def compute_metrics(model: Any, X: pd.DataFrame, y: pd.Series, task: str) -> dict[str, float]:
    try:
        predictions = model.predict(X if hasattr(model, "feature_names_in_") else X.to_numpy())
    except Exception as exc:
        raise EvaluationDataError(f"the model failed on the evaluation data: {exc}") from None
    if task == Task.REGRESSION:
        return {
            "mae": float(skm.mean_absolute_error(y, predictions)),
            "rmse": float(np.sqrt(skm.mean_squared_error(y, predictions))),
            "r2": float(skm.r2_score(y, predictions)),
        }
    return _classification_metrics(model, X, y, predictions)


def _classification_metrics(model: Any, X: pd.DataFrame, y: pd.Series, predictions: np.ndarray) -> dict[str, float]:
    classes = list(getattr(model, "classes_", np.unique(np.concatenate([np.asarray(y), predictions]))))
    if predictions.dtype.kind != np.asarray(y).dtype.kind and np.asarray(y).dtype.kind in "iub":
        predictions = predictions.astype(np.asarray(y).dtype)
    binary = len(classes) == 2
    averaging: dict[str, Any] = {"average": "binary", "pos_label": classes[1]} if binary else {"average": "macro"}
    result = {
        "accuracy": float(skm.accuracy_score(y, predictions)),
        "precision": float(skm.precision_score(y, predictions, zero_division=0, **averaging)),
        "recall": float(skm.recall_score(y, predictions, zero_division=0, **averaging)),
        "f1": float(skm.f1_score(y, predictions, zero_division=0, **averaging)),
    }
    if hasattr(model, "predict_proba") and len(set(np.asarray(y).tolist())) > 1:
        probabilities = model.predict_proba(X if hasattr(model, "feature_names_in_") else X.to_numpy())
        if binary:
            result["roc_auc"] = float(skm.roc_auc_score(y, probabilities[:, 1]))
        else:
            result["roc_auc"] = float(skm.roc_auc_score(y, probabilities, multi_class="ovr", labels=classes))
    return result
