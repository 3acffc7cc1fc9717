"""`GET /api/v1/audit/`: the audit trail for admins, filtered; pages of JSON, or the whole selection streamed as CSV
(`?format=csv`) or JSON lines (`?format=jsonl`)."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, renderers, serializers
from rest_framework.exceptions import ValidationError

from registry import audit
from registry.models import AuditEntry, AuditSource


class _StreamRenderer(renderers.BaseRenderer):
    """Names a streamed format for DRF's ?format= negotiation; errors still go out as JSON text."""

    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return renderers.JSONRenderer().render(data)


class CSVRenderer(_StreamRenderer):
    media_type = "text/csv"
    format = "csv"


class JSONLinesRenderer(_StreamRenderer):
    media_type = "application/x-ndjson"
    format = "jsonl"


class AuditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        fields = list(audit.EXPORT_COLUMNS)


def _filters(params) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    given = {name: params.get(name, "") for name in audit.FILTERS}
    for name in ("since", "until"):
        if given[name]:
            try:
                when = parse_datetime(given[name])
            except ValueError:
                when = None
            if when is None or when.tzinfo is None:
                errors[name] = ["an ISO 8601 time with its offset, e.g. 2026-01-31T00:00:00Z"]
            given[name] = when
        else:
            given[name] = None
    if given["source"] and given["source"] not in AuditSource.values:
        errors["source"] = [f"one of {', '.join(AuditSource.values)}"]
    for name, value in given.items():
        if isinstance(value, str) and len(value) > 200:
            errors[name] = ["at most 200 characters"]
    if errors:
        raise ValidationError(errors)
    return given


class AuditList(generics.ListAPIView):
    serializer_class = AuditEntrySerializer
    renderer_classes = [renderers.JSONRenderer, renderers.BrowsableAPIRenderer, CSVRenderer, JSONLinesRenderer]

    def get_queryset(self):
        return audit.entries(**_filters(self.request.query_params))

    @extend_schema(
        parameters=[
            OpenApiParameter("format", enum=["json", "csv", "jsonl"], description="csv/jsonl: the whole selection"),
            OpenApiParameter("action", description='an action, or a prefix ending in "." (api_key.)'),
            OpenApiParameter("source", enum=list(AuditSource.values)),
            OpenApiParameter("actor", description="a user's name or id"),
            *(OpenApiParameter(name) for name in ("target_type", "target_id", "request_id")),
            OpenApiParameter("since", description="ISO 8601 time, inclusive"),
            OpenApiParameter("until", description="ISO 8601 time, exclusive"),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def list(self, request, *args, **kwargs):
        chosen = request.accepted_renderer.format
        if chosen not in ("csv", "jsonl"):
            return super().list(request, *args, **kwargs)
        rows = self.get_queryset()
        if chosen == "csv":
            response = StreamingHttpResponse(audit.csv_lines(rows), content_type="text/csv; charset=utf-8")
        else:
            response = StreamingHttpResponse(audit.jsonl_lines(rows), content_type="application/x-ndjson")
        response["Content-Disposition"] = f'attachment; filename="audit.{chosen}"'
        return response
