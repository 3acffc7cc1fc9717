"""Request rows checked against a version's signature before the model sees anything.

Answers rows as lists in signature order, or raises InputError naming each bad row and field.
"""

from __future__ import annotations

import math
from typing import Any

MAX_REPORTED_ERRORS = 20


class InputError(Exception):
    def __init__(self, errors: list[dict[str, Any]], status: int = 400) -> None:
        super().__init__(errors[0]["message"] if errors else "bad input")
        self.errors = errors
        self.status = status


def _problem(row: int | None, field: str | None, message: str) -> dict[str, Any]:
    return {"row": row, "field": field, "message": message}


def check_value(feature: dict[str, Any], value: Any) -> str | None:
    """Why the value does not fit the feature, or None when it does."""
    dtype = feature["dtype"]
    if value is None:
        return None if feature.get("nullable") else "is required (not nullable)"
    if dtype == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {type(value).__name__}"
        if not math.isfinite(value):
            return None if feature.get("nullable") else "must be finite (not NaN or infinity)"
    elif dtype == "int":
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
        ):
            return f"must be an integer, got {value!r}"
    elif dtype == "bool":
        if not isinstance(value, bool):
            return f"must be true or false, got {value!r}"
    elif dtype == "category" and (not isinstance(value, str | int) or isinstance(value, bool)):
        return f"must be a category (string or integer), got {type(value).__name__}"
    allowed = feature.get("allowed")
    if allowed is not None and value not in allowed:
        return f"{value!r} is not one of the allowed values"
    if "min" in feature and value < feature["min"]:
        return f"{value} is below the minimum {feature['min']}"
    if "max" in feature and value > feature["max"]:
        return f"{value} is above the maximum {feature['max']}"
    return None


def rows_from_payload(payload: Any, signature: dict[str, Any], max_batch: int) -> list[list[Any]]:
    """`{"instances": [{feature: value}]}` or `{"inputs": [[v1, v2, ...]]}` -> rows in signature order."""
    if not isinstance(payload, dict):
        raise InputError([_problem(None, None, "the body must be a JSON object with 'instances' or 'inputs'")])
    has_instances, has_inputs = "instances" in payload, "inputs" in payload
    if has_instances == has_inputs:
        raise InputError([_problem(None, None, "give exactly one of 'instances' (objects) or 'inputs' (arrays)")])
    rows = payload["instances"] if has_instances else payload["inputs"]
    field = "instances" if has_instances else "inputs"
    if not isinstance(rows, list) or not rows:
        raise InputError([_problem(None, field, "must be a non-empty list of rows")])
    if len(rows) > max_batch:
        raise InputError([_problem(None, field, f"{len(rows)} rows; at most {max_batch} per request")])
    features = signature["inputs"]
    checked = [_row_from_object(i, r, features) if has_instances else _row_from_array(i, r, features)
               for i, r in enumerate(rows)]  # fmt: skip
    errors = [e for _, row_errors in checked for e in row_errors]
    if errors:
        raise InputError(errors[:MAX_REPORTED_ERRORS])
    return [row for row, _ in checked]


def _row_from_object(index: int, row: Any, features: list[dict[str, Any]]) -> tuple[list[Any], list[dict]]:
    if not isinstance(row, dict):
        return [], [_problem(index, None, "each instance must be an object of feature: value")]
    errors, values, present = [], [], 0
    for feature in features:
        name = feature["name"]
        if name not in row:
            values.append(None)
            if not feature.get("nullable"):
                errors.append(_problem(index, name, "is missing"))
            continue
        present += 1
        value = row[name]
        if problem := check_value(feature, value):
            errors.append(_problem(index, name, problem))
        values.append(value)
    if len(row) > present:  # only then is it worth looking for the keys that are not features
        known = {f["name"] for f in features}
        errors.extend(_problem(index, str(n), "is not a feature of this model") for n in row if n not in known)
    return values, errors


def _row_from_array(index: int, row: Any, features: list[dict[str, Any]]) -> tuple[list[Any], list[dict]]:
    if not isinstance(row, list):
        return [], [_problem(index, None, "each input must be an array of values in signature order")]
    if len(row) != len(features):
        return [], [_problem(index, None, f"has {len(row)} values; the model takes {len(features)}")]
    errors = [_problem(index, f["name"], p) for f, v in zip(features, row, strict=True) if (p := check_value(f, v))]
    return row, errors
