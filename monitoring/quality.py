"""Model quality from ground truth, computed with scikit-learn's own functions (as registry/evaluation.py does)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse", "r2")
# Metrics where lower is better: a threshold on them is a ceiling, on the others a floor.
LOWER_IS_BETTER = frozenset({"mae", "rmse"})


def regression_metrics(actual: list[float], predicted: list[float]) -> dict[str, float | None]:
    y, p = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    return {
        "mae": float(skm.mean_absolute_error(y, p)),
        "rmse": float(np.sqrt(skm.mean_squared_error(y, p))),
        "r2": float(skm.r2_score(y, p)) if len(y) > 1 else None,
    }


def classification_metrics(
    actual: list[Any], predicted: list[Any], probabilities: list[list[float]] | None, classes: list[Any] | None
) -> dict[str, float | None]:
    """Binary: the positive class is the second of `classes` (sklearn's classes_ order); otherwise macro averages."""
    labels = list(classes) if classes else sorted(set(actual) | set(predicted), key=repr)
    binary = len(labels) == 2
    averaging: dict[str, Any] = {"average": "binary", "pos_label": labels[1]} if binary else {"average": "macro"}
    result: dict[str, float | None] = {
        "accuracy": float(skm.accuracy_score(actual, predicted)),
        "precision": float(skm.precision_score(actual, predicted, zero_division=0, **averaging)),
        "recall": float(skm.recall_score(actual, predicted, zero_division=0, **averaging)),
        "f1": float(skm.f1_score(actual, predicted, zero_division=0, **averaging)),
        "roc_auc": None,
    }
    if probabilities is not None and classes and len(set(actual)) > 1:
        scores = np.asarray(probabilities, dtype=float)
        try:
            if binary:
                result["roc_auc"] = float(skm.roc_auc_score(np.asarray(actual) == labels[1], scores[:, 1]))
            else:
                result["roc_auc"] = float(skm.roc_auc_score(actual, scores, multi_class="ovr", labels=labels))
        except ValueError:  # e.g. a class of the model never observed in this window: AUC is undefined
            result["roc_auc"] = None
    return result
