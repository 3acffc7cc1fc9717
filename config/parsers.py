"""The management API's JSON parser: DRF's, refusing what Postgres could not store with a 400 naming the field.

Serializer CharFields already refuse NUL and lone surrogates, but JSON and dict fields (tags, metric specs, feature
definitions, feedback values, rollout analysis) pass any string through to jsonb/text, where the driver fails with a
500. The prediction endpoints are plain Django views with their own parsing and are not affected.
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

from config.storable import unstorable


class StorableJSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        problem = _first_problem(data)
        if problem is not None:
            field, message = problem
            raise ValidationError({field: [f"cannot be stored: {message}"]})
        return data


def _first_problem(data: Any) -> tuple[str, str] | None:
    if isinstance(data, dict):
        for key, value in data.items():
            problem = unstorable({key: value})
            if problem is not None:
                field = key if isinstance(key, str) and unstorable(key) is None else "non_field_errors"
                return field, problem
        return None
    problem = unstorable(data)
    return ("non_field_errors", problem) if problem is not None else None
