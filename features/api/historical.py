"""Point-in-time training data over HTTP: `POST /api/v1/features/historical/`.

The same service as the `historical_features` command (features.historical.get_historical_features), for entity rows
sent as JSON rather than a file; bounded like the other feature endpoints (MODELWORKS_FEATURES_MAX_ROWS).
"""

from __future__ import annotations

import json

import pandas as pd
from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from features.historical import get_historical_features
from features.schema import EVENT_TIMESTAMP


class HistoricalRequestSerializer(serializers.Serializer):
    entity_rows = serializers.ListField(
        child=serializers.DictField(), allow_empty=False, help_text='[{join_key: id, "event_timestamp": "..."}, ...]'
    )
    features = serializers.ListField(child=serializers.CharField(), allow_empty=False, help_text='["view:feature"]')
    timestamp_column = serializers.CharField(required=False, default=EVENT_TIMESTAMP, max_length=100)
    as_of_created = serializers.BooleanField(
        required=False, default=False, help_text="only values already written at each row's time (no late backfills)"
    )

    def validate_entity_rows(self, rows: list[dict]) -> list[dict]:
        limit = settings.MODELWORKS_FEATURES_MAX_ROWS
        if len(rows) > limit:
            raise serializers.ValidationError(f"{len(rows)} rows; at most {limit} per request")
        return rows


class HistoricalResponseSerializer(serializers.Serializer):
    columns = serializers.ListField(child=serializers.CharField())
    rows = serializers.ListField(child=serializers.ListField())


class Historical(APIView):
    """Reads by POST (entity lists do not fit a URL): API keys need registry:read."""

    @extend_schema(request=HistoricalRequestSerializer, responses={200: HistoricalResponseSerializer})
    def post(self, request: Request) -> Response:
        data = HistoricalRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        result = get_historical_features(
            pd.DataFrame(fields["entity_rows"]),
            fields["features"],
            as_of_created=fields["as_of_created"],
            timestamp_column=fields["timestamp_column"],
        )
        # pandas' own JSON writer: numpy scalars as plain numbers, NaN as null, timestamps as ISO 8601
        table = json.loads(result.to_json(orient="split", index=False, date_format="iso"))
        return Response({"columns": table["columns"], "rows": table["data"]})
