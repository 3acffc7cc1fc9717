"""Feature types, feature references ("view:feature") and the checks every write path shares."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError

from features.models import Entity, ValueType
from serving.validation import string_problem

DTYPES = ("float", "int", "bool", "string")
REF = re.compile(r"^([a-z][a-z0-9_]{0,62}):([A-Za-z_][A-Za-z0-9_]{0,99})$")
FEATURE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"  # a view's default created-timestamp column
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_TEXT = re.compile(r"-?\d{1,12}(\.\d{1,9})?")


def parse_ref(ref: Any) -> tuple[str, str] | None:
    """("view", "feature") for a well-formed "view:feature", else None."""
    return _parse_ref(ref) if isinstance(ref, str) else None


@lru_cache(maxsize=4096)  # the same few refs arrive on every online read
def _parse_ref(ref: str) -> tuple[str, str] | None:
    match = REF.match(ref)
    return (match.group(1), match.group(2)) if match else None


def dtype_problem(dtype: str, value: Any) -> str | None:
    """Why `value` is not a `dtype` (None is always allowed: a feature may be unknown), or None when it is."""
    if value is None:
        return None
    if dtype == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {type(value).__name__}"
        if not math.isfinite(value):
            return "must be finite (not NaN or infinity)"
    elif dtype == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            return f"must be an integer, got {value!r}"
    elif dtype == "bool":
        if not isinstance(value, bool):
            return f"must be true or false, got {value!r}"
    elif dtype == "string" and not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    return None


def normalise(dtype: str, value: Any) -> Any:
    """The stored form of a checked value: ints as int, floats as float."""
    if value is None:
        return None
    if dtype == "int":
        return int(value)
    if dtype == "float":
        return float(value)
    return value


def entity_key_problem(entity: Entity, value: Any) -> str | None:
    if value is None or value == "":
        return "is missing"
    if entity.value_type == ValueType.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value):
                return None
            return f"must be an integer id, got {value!r}"
    elif not isinstance(value, str | int) or isinstance(value, bool):
        return f"must be a string id, got {type(value).__name__}"
    if len(str(value)) > 200:
        return "is longer than 200 characters"
    if isinstance(value, str):
        return string_problem(value, 200)  # NUL or a lone surrogate: Postgres cannot compare it with a stored key
    return None


def entity_key(value: Any) -> str:
    """Keys are stored as text whatever the entity's type: 7, "7" and 7.0 never become three entities."""
    return str(int(value)) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def parse_timestamp(value: Any) -> datetime | None:
    """The feature store's one reader of times (ingest, push, historical entity rows, the client's payloads).

    An aware datetime from ISO-8601 text of any precision ("2024-01-03T00:35:42Z" and "...07.030864Z" alike; digits
    past microseconds are dropped; naive means UTC), a datetime / pandas Timestamp / numpy datetime64 (naive means
    UTC), or epoch seconds as a number or as text that is a plain number but no ISO-8601 date (a CSV cell: "1704240000";
    "20240103" is 3 January 2024); None when unreadable (NaN, NaT, booleans, anything else)."""
    if isinstance(value, np.datetime64):
        value = None if np.isnat(value) else value.astype("datetime64[us]").item()  # a naive datetime (or int)
        if not isinstance(value, datetime):
            return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, datetime):
        if value != value:  # noqa: PLR0124 (pandas' NaT, a datetime that is not equal to itself)
            return None
        # a pandas Timestamp: digits past microseconds are dropped, as in text
        parsed = value.to_pydatetime(warn=False) if hasattr(value, "to_pydatetime") else value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            return None
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return parse_timestamp(float(text)) if EPOCH_TEXT.fullmatch(text) else None
    else:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_timestamps(values: Iterable[Any], field: str, first_row: int = 0) -> list[datetime]:
    """Every value read by parse_timestamp; ValidationError naming `field` and the first bad row otherwise."""
    parsed = []
    for row, value in enumerate(values, start=first_row):
        moment = parse_timestamp(value)
        if moment is None:
            raise ValidationError({field: [f"row {row}: {_shown(value)} is not an ISO-8601 time or epoch seconds"]})
        parsed.append(moment)
    return parsed


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
