"""Serializer fields shared by every app's API (rollouts, experiments and monitoring import them; never the reverse)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from registry import refs


@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "pattern": r"^(\d+|models:/[-a-zA-Z0-9_]+(/\d+|@[a-z][a-z0-9_-]*))$"},
        ],
        "description": "a version number, models:/<name>/<version> or models:/<name>@<alias>",
        "example": "models:/churn@production",
    }
)
class VersionRefField(serializers.Field):
    """A version as a number or a `models:/` reference (registry/refs.py); validated data is a refs.VersionRef.

    The spelling is checked here; which version it names depends on the model, so views (or services) resolve it
    with refs.resolve, which refuses a reference to another model than the path's on this same field.
    """

    default_error_messages = {"invalid": "expected " + refs.SYNTAX}

    def to_internal_value(self, data: Any) -> refs.VersionRef:
        try:
            return refs.parse(data, field=self.field_name or "version")
        except DjangoValidationError as exc:
            raise serializers.ValidationError(next(iter(exc.message_dict.values()))) from None

    def to_representation(self, value: Any) -> Any:
        return value.version if isinstance(value, refs.VersionRef) and value.model is None else str(value)
