"""Feedback and business events from a CSV file (the console's bulk upload): each row is checked by the same item
serializer POST /api/v1/feedback and /api/v1/events use, and the rows that pass are stored by the same service.

A CSV has one column per item field (`request_id`, `routing_key`, `model`, `time`, `actual` for feedback; `key`,
`name`, `value`, `time`, `event_id` for events); an empty cell is a field not given. Rows are numbered as a
spreadsheet shows them: the header is row 1, the first data row is row 2.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rest_framework import serializers

from config.storable import unstorable
from monitoring.api.serializers import MAX_ITEMS, EventItemSerializer, FeedbackItemSerializer
from monitoring.services.events import EventItem, business_events_record
from monitoring.services.feedback import FeedbackItem, feedback_record


@dataclass(frozen=True)
class Kind:
    serializer: type[serializers.Serializer]
    item: type
    record: Callable[..., dict[str, int]]
    required: tuple[str, ...]


KINDS: dict[str, Kind] = {
    "feedback": Kind(FeedbackItemSerializer, FeedbackItem, feedback_record, ("actual",)),
    "events": Kind(EventItemSerializer, EventItem, business_events_record, ("key", "name")),
}


@dataclass
class Row:
    number: int
    cells: dict[str, str]
    problems: list[str] = field(default_factory=list)
    item: Any = None


class UnreadableCSV(ValueError):
    """The file as a whole cannot be read (not text, no header, no column the items know): one line why."""


def _cell(name: str, text: str) -> Any:
    if name == "actual":  # a number, a boolean or a list of them reads as one; a class label stays text
        try:
            return json.loads(text, parse_constant=_not_json)  # NaN and Infinity stay text, as JSON has neither
        except ValueError:
            return text
    return text


def _not_json(constant: str) -> Any:
    raise ValueError(constant)


def _problems(errors: Any, prefix: str = "") -> list[str]:
    if isinstance(errors, dict):
        return [p for key, value in errors.items() for p in _problems(value, "" if key == "non_field_errors" else key)]
    if isinstance(errors, list):
        return [p for value in errors for p in _problems(value, prefix)]
    return [f"{prefix}: {errors}" if prefix else str(errors)]


def parse_rows(kind: str, data: bytes) -> list[Row]:
    """Every row of the file with its problems (none: it would be stored). UnreadableCSV for the file as a whole."""
    spec = KINDS[kind]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnreadableCSV("the file is not UTF-8 text: save it as CSV (UTF-8)") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    known = set(spec.serializer().fields)
    header = [name.strip() for name in reader.fieldnames or []]
    if not header:
        raise UnreadableCSV("the file is empty: the first row must name the columns")
    missing = [name for name in spec.required if name not in header]
    if missing:
        raise UnreadableCSV(
            f"the header lacks the column(s) {', '.join(missing)}; the columns {kind} reads are {', '.join(known)}"
        )
    reader.fieldnames = header
    rows = []
    for number, record in enumerate(reader, start=2):
        cells = {k: (v or "").strip() for k, v in record.items() if k is not None}
        row = Row(number, cells)
        if None in record:
            row.problems.append(f"{len(record[None])} cell(s) more than the header has columns")
        data = {k: _cell(k, v) for k, v in cells.items() if k in known and v != ""}
        # What the API's JSON parser refuses before its serializers run (config/parsers.py), refused here too.
        row.problems += [f"{k}: cannot be stored: {problem}" for k, v in data.items() if (problem := unstorable(v))]
        checked = spec.serializer(data=data)
        if checked.is_valid():
            row.item = spec.item(**checked.validated_data)
        else:
            row.problems += _problems(checked.errors)
        if row.problems:
            row.item = None
        rows.append(row)
    if not rows:
        raise UnreadableCSV("the file has a header but no rows")
    ignored = [name for name in header if name not in known]
    if ignored and all(not r.item for r in rows):
        raise UnreadableCSV(f"no row could be read; columns not known to {kind}: {', '.join(ignored)}")
    return rows


def store_rows(kind: str, rows: list[Row]) -> dict[str, Any]:
    """Store the rows without problems through the API's service (in batches of the API's size) and answer what was
    stored and what refused, by row."""
    spec = KINDS[kind]
    items = [row.item for row in rows if row.item is not None]
    totals: dict[str, int] = {}
    for start in range(0, len(items), MAX_ITEMS):
        for key, value in spec.record(items=items[start : start + MAX_ITEMS]).items():
            totals[key] = totals.get(key, 0) + value
    refused = [(row.number, "; ".join(row.problems)) for row in rows if row.item is None]
    return {"rows": len(rows), "recorded": totals, "refused": refused}
