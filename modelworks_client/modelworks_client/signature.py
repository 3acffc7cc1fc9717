"""A version's signature, inferred on the client from the fitted model and a DataFrame, in the server's format
(registry/signature.py):

    {"inputs": [{"name": "age", "dtype": "float|int|bool|category", "nullable": false, "pii": false,
                 "allowed": [...]}, ...],
     "outputs": {"classes": [0, 1]}}                # classifiers only

Inferring here rather than on the server keeps the DataFrame's own dtypes (a CSV upload loses them: a category of
digits reads back as integers).
"""

from __future__ import annotations

from typing import Any

MAX_INFERRED_CATEGORIES = 100  # as the server: more distinct values than this are not listed as allowed


def plain(value: Any) -> Any:
    """numpy scalars (class labels, cell values) as plain Python values for JSON."""
    item = getattr(value, "item", None)
    return item() if callable(item) and type(value).__module__ == "numpy" else value


def is_classifier(model: Any) -> bool:
    """scikit-learn's own answer when it has one; otherwise, whether the model has classes_."""
    try:
        from sklearn.base import is_classifier as sklearn_is_classifier

        return bool(sklearn_is_classifier(model))
    except (ImportError, AttributeError):
        return hasattr(model, "classes_")


def infer_task(model: Any) -> str:
    """The task as the registry names it: "classification" or "regression"."""
    return "classification" if is_classifier(model) else "regression"


def model_classes(model: Any) -> list[Any] | None:
    classes = getattr(model, "classes_", None)
    return None if classes is None else [plain(c) for c in classes]


def infer_signature(model: Any, frame: Any = None) -> dict[str, Any]:
    """The inputs (names from the model's feature_names_in_, else the frame's columns; dtypes, nullability and
    categories from the frame's values) and, for a classifier, its classes."""
    names = getattr(model, "feature_names_in_", None)
    count = getattr(model, "n_features_in_", None)
    if names is not None:
        names = [str(n) for n in names]
    elif frame is not None and (count is None or count == frame.shape[1]):
        names = [str(c) for c in frame.columns]
    elif count:
        names = [f"x{i}" for i in range(count)]
    else:
        raise ValueError("cannot infer the inputs: the model does not say how many features it takes; give signature=")
    inputs = [_feature(name, frame[name] if frame is not None and name in frame.columns else None) for name in names]
    outputs: dict[str, Any] = {}
    if is_classifier(model):
        classes = model_classes(model)
        if classes is not None:
            outputs["classes"] = classes
    return {"inputs": inputs, "outputs": outputs}


def _feature(name: str, column: Any) -> dict[str, Any]:
    feature: dict[str, Any] = {"name": name, "dtype": "float", "nullable": False, "pii": False}
    if column is None:
        return feature
    import pandas as pd

    feature["nullable"] = bool(column.isna().any())
    if pd.api.types.is_bool_dtype(column):
        feature["dtype"] = "bool"
    elif pd.api.types.is_integer_dtype(column):
        feature["dtype"] = "int"
    elif not pd.api.types.is_numeric_dtype(column):
        feature["dtype"] = "category"
        values = sorted({str(v) for v in column.dropna().unique()})
        if len(values) <= MAX_INFERRED_CATEGORIES:
            feature["allowed"] = values
    return feature
