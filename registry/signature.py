"""Model signatures: the ordered inputs a version accepts and the outputs it gives.

A signature is JSON:
    {"inputs": [{"name": "age", "dtype": "float|int|bool|category", "nullable": false,
                 "min": 0, "max": 120, "allowed": [...], "pii": false,
                 "feature": "view:feature"}, ...],         # optional: filled from the feature store by entity id
     "outputs": {"classes": [0, 1]}}        # classes for classifiers only
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier

from registry.models import Task

DTYPES = ("float", "int", "bool", "category")
MAX_INFERRED_CATEGORIES = 100
FEATURE_REF = re.compile(r"^[a-z][a-z0-9_]{0,62}:[A-Za-z_][A-Za-z0-9_]{0,99}$")


def to_json_value(value: Any) -> Any:
    """numpy scalars (class labels, bounds) as plain JSON values."""
    return value.item() if isinstance(value, np.generic) else value


def validate_signature(raw: Any) -> tuple[dict[str, Any], list[str]]:
    """Check a signature's shape; answer the normalised signature and a list of readable problems."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        return {}, ["must be an object with 'inputs' (a list) and optional 'outputs'"]
    inputs = raw.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return {}, ["'inputs' must be a non-empty list of features"]
    unknown_top = set(raw) - {"inputs", "outputs"}
    if unknown_top:
        problems.append(f"unknown keys: {', '.join(sorted(unknown_top))}")
    seen: set[str] = set()
    normalised_inputs = []
    for index, feature in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(feature, dict):
            problems.append(f"{where}: must be an object with at least 'name' and 'dtype'")
            continue
        name, dtype = feature.get("name"), feature.get("dtype", "float")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}.name: must be a non-empty string")
            continue
        if name in seen:
            problems.append(f"{where}.name: '{name}' appears twice")
        seen.add(name)
        if dtype not in DTYPES:
            problems.append(f"{where}.dtype: '{dtype}' is not one of {', '.join(DTYPES)}")
        unknown = set(feature) - {"name", "dtype", "nullable", "min", "max", "allowed", "pii", "feature"}
        if unknown:
            problems.append(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        entry: dict[str, Any] = {
            "name": name,
            "dtype": dtype,
            "nullable": bool(feature.get("nullable", False)),
            "pii": bool(feature.get("pii", False)),
        }
        if feature.get("feature") is not None:  # the feature store can fill this input by entity id
            if not isinstance(feature["feature"], str) or not FEATURE_REF.match(feature["feature"]):
                problems.append(f"{where}.feature: must be a reference like 'view:feature'")
            else:
                entry["feature"] = feature["feature"]
        for bound in ("min", "max"):
            if feature.get(bound) is not None:
                value = feature[bound]
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    problems.append(f"{where}.{bound}: must be a finite number")
                else:
                    entry[bound] = value
        if "min" in entry and "max" in entry and entry["min"] > entry["max"]:
            problems.append(f"{where}: min {entry['min']} is greater than max {entry['max']}")
        if feature.get("allowed") is not None:
            allowed = feature["allowed"]
            if not isinstance(allowed, list) or not allowed:
                problems.append(f"{where}.allowed: must be a non-empty list of values")
            else:
                entry["allowed"] = allowed
        normalised_inputs.append(entry)
    outputs = raw.get("outputs") or {}
    if not isinstance(outputs, dict):
        problems.append("'outputs' must be an object, e.g. {\"classes\": [0, 1]}")
        outputs = {}
    classes = outputs.get("classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) < 2):
        problems.append("outputs.classes: must list at least two classes")
    normalised = {"inputs": normalised_inputs, "outputs": {"classes": classes} if classes is not None else {}}
    return normalised, problems


def model_is_classifier(model: Any) -> bool:
    own = getattr(model, "is_classifier", None)  # artifacts.OnnxModel knows; it has no scikit-learn tags to ask
    if isinstance(own, bool):
        return own
    try:
        return is_classifier(model)
    except AttributeError:  # not a scikit-learn estimator (a trusted pickle of something else)
        return hasattr(model, "classes_")


def model_classes(model: Any) -> list[Any] | None:
    classes = getattr(model, "classes_", None)
    return None if classes is None else [to_json_value(c) for c in classes]


def infer_signature(model: Any, task: str, frame: pd.DataFrame | None = None) -> tuple[dict[str, Any], list[str]]:
    """A signature from the model's own attributes and, when given, the evaluation data's columns and values."""
    names = getattr(model, "feature_names_in_", None)
    count = getattr(model, "n_features_in_", None)
    if names is not None:
        names = [str(n) for n in names]
    elif frame is not None and (count is None or count == frame.shape[1]):
        names = [str(c) for c in frame.columns]
    elif count:
        names = [f"x{i}" for i in range(count)]
    else:
        return {}, ["cannot infer the inputs: the model does not say how many features it takes; give a signature"]
    inputs = []
    for name in names:
        column = frame[name] if frame is not None and name in frame.columns else None
        inputs.append(_infer_feature(name, column))
    outputs: dict[str, Any] = {}
    if task == Task.CLASSIFICATION and model_is_classifier(model):  # a mismatched task is reported by the check
        classes = model_classes(model)
        if classes is None:
            return {}, ["cannot infer the classes: the model has no classes_; give outputs.classes in a signature"]
        outputs["classes"] = classes
    return {"inputs": inputs, "outputs": outputs}, []


def _infer_feature(name: str, column: pd.Series | None) -> dict[str, Any]:
    feature: dict[str, Any] = {"name": name, "dtype": "float", "nullable": False, "pii": False}
    if column is None:
        return feature
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


def check_model_matches(signature: dict[str, Any], model: Any, task: str) -> list[str]:
    """Where the model disagrees with its signature or its registered task (feature count, names, classes)."""
    problems = []
    classifier = model_is_classifier(model)
    if task == Task.CLASSIFICATION and not classifier:
        problems.append("the model is a regressor but the registered model's task is classification")
    if task == Task.REGRESSION and classifier:
        problems.append("the model is a classifier but the registered model's task is regression")
    names = [f["name"] for f in signature["inputs"]]
    count = getattr(model, "n_features_in_", None)
    if count is not None and count != len(names):
        problems.append(f"the model takes {count} features but the signature declares {len(names)}")
    model_names = getattr(model, "feature_names_in_", None)
    if model_names is not None and count == len(names):
        for position, (expected, declared) in enumerate(zip(model_names, names, strict=True)):
            if str(expected) != declared:
                problems.append(f"feature {position} is '{expected}' in the model but '{declared}' in the signature")
                break
    if task == Task.CLASSIFICATION and classifier:
        declared_classes = signature["outputs"].get("classes")
        actual = model_classes(model)
        if actual is None and declared_classes is None:
            problems.append("the signature must list outputs.classes: the model does not expose classes_")
        elif actual is not None and declared_classes is not None and declared_classes != actual:
            problems.append(f"the model predicts classes {actual} but the signature declares {declared_classes}")
    return problems
