"""Request rows checked against a version's signature before the model sees anything.

Answers rows as lists in signature order, or raises InputError naming each bad row and field. What passes here can
also be stored: every number fits a float64 (or the model's narrower float, `float_limit`) or an int64, every string
is valid UTF-8 without NUL and of bounded length, since the prediction log (orjson, Postgres jsonb) cannot hold more.
"""

from __future__ import annotations

import math
from typing import Any

MAX_REPORTED_ERRORS = 20
FLOAT64_MAX = 1.7976931348623157e308
FLOAT32_MAX = 3.4028234663852886e38  # tree ensembles and ONNX float tensors cast their inputs to float32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_CATEGORY_LENGTH = 1024
MAX_KEY_LENGTH = 200  # the prediction log's routing_key column


class InputError(Exception):
    def __init__(self, errors: list[dict[str, Any]], status: int = 400) -> None:
        super().__init__(errors[0]["message"] if errors else "bad input")
        self.errors = errors
        self.status = status


def _problem(row: int | None, field: str | None, message: str) -> dict[str, Any]:
    return {"row": row, "field": field, "message": message}


def string_problem(value: str, max_length: int) -> str | None:
    """Why the string cannot be stored (Postgres text and jsonb, orjson), or None when it can."""
    if len(value) > max_length:
        return f"is {len(value)} characters long; at most {max_length}"
    if "\x00" in value:
        return "must not contain NUL (\\u0000)"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode (no lone surrogates such as \\ud800)"
    return None


def check_value(feature: dict[str, Any], value: Any, float_limit: float = FLOAT64_MAX) -> str | None:
    """Why the value does not fit the feature, or None when it does."""
    dtype = feature["dtype"]
    if value is None:
        return None if feature.get("nullable") else "is required (not nullable)"
    if dtype == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return None if feature.get("nullable") else "must be finite (not NaN or infinity)"
        if not -float_limit <= value <= float_limit:
            return f"is outside what this model can take (at most {float_limit:.8g} in magnitude)"
    elif dtype == "int":
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
        ):
            return f"must be an integer, got {_shown(value)}"
        if not INT64_MIN <= value <= INT64_MAX:
            return "is outside the 64-bit integer range"
    elif dtype == "bool":
        if not isinstance(value, bool):
            return f"must be true or false, got {_shown(value)}"
    elif dtype == "category":
        if isinstance(value, str):
            if problem := string_problem(value, MAX_CATEGORY_LENGTH):
                return problem
        elif isinstance(value, bool) or not isinstance(value, int):
            return f"must be a category (string or integer), got {type(value).__name__}"
        elif not INT64_MIN <= value <= INT64_MAX:
            return "is outside the 64-bit integer range"
    allowed = feature.get("allowed")
    if allowed is not None and value not in allowed:
        return f"{_shown(value)} is not one of the allowed values"
    if "min" in feature and value < feature["min"]:
        return f"{value} is below the minimum {feature['min']}"
    if "max" in feature and value > feature["max"]:
        return f"{value} is above the maximum {feature['max']}"
    return None


def _shown(value: Any) -> str:
    """The value as an error message quotes it: escaped (repr), and short, however long the value sent."""
    shown = repr(value)
    return shown if len(shown) <= 60 else f"{shown[:57]}..."


def rows_from_payload(
    payload: Any, signature: dict[str, Any], max_batch: int, *, float_limit: float = FLOAT64_MAX
) -> list[list[Any]]:
    """`{"instances": [{feature: value}]}` or `{"inputs": [[v1, v2, ...]]}` -> rows in signature order.

    An integer given for a float feature comes back as a float: JSON does not tell 3 from 3.0, the model computes
    with floats anyway, and so the log stores what the model saw (an integer above 2^64 could not be stored at all).
    `float_limit`: the largest magnitude the model's arithmetic holds (FLOAT32_MAX for float32 models).
    """
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
    read = _row_from_object if has_instances else _row_from_array
    checked = [read(i, r, features, float_limit) for i, r in enumerate(rows)]
    errors = [e for _, row_errors in checked for e in row_errors]
    if errors:
        raise InputError(errors[:MAX_REPORTED_ERRORS])
    return [row for row, _ in checked]


def _row_from_object(
    index: int, row: Any, features: list[dict[str, Any]], float_limit: float
) -> tuple[list[Any], list[dict]]:
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
        if problem := check_value(feature, value, float_limit):
            errors.append(_problem(index, name, problem))
        elif type(value) is int and feature["dtype"] == "float":
            value = float(value)  # fits: check_value compared it with float_limit
        values.append(value)
    if len(row) > present:  # only then is it worth looking for the keys that are not features
        known = {f["name"] for f in features}
        errors.extend(_problem(index, _printable(n), "is not a feature of this model") for n in row if n not in known)
    return values, errors


def _row_from_array(
    index: int, row: Any, features: list[dict[str, Any]], float_limit: float
) -> tuple[list[Any], list[dict]]:
    if not isinstance(row, list):
        return [], [_problem(index, None, "each input must be an array of values in signature order")]
    if len(row) != len(features):
        return [], [_problem(index, None, f"has {len(row)} values; the model takes {len(features)}")]
    errors = [_problem(index, f["name"], p) for f, v in zip(features, row, strict=True)
              if (p := check_value(f, v, float_limit))]  # fmt: skip
    if not errors and int in map(type, row):  # a new list: the caller's stays as it was
        row = [float(v) if type(v) is int and f["dtype"] == "float" else v for f, v in zip(features, row, strict=True)]
    return row, errors


def _printable(name: str) -> str:
    """A name from the request as it can be echoed in an answer: shortened, and escaped when it could not be
    encoded (a lone surrogate) or stored."""
    if string_problem(name, MAX_KEY_LENGTH) is None:
        return name
    return ascii(name[:MAX_KEY_LENGTH])
