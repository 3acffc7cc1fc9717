"""Monitoring REST API: validate input, call one service or selector, serialize the answer."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring.api import serializers as s
from monitoring.services.events import EventItem, business_events_record
from monitoring.services.feedback import FeedbackItem, feedback_record


def _items(request: Request) -> dict:
    """A batch is {"items": [...]}; a bare list or a single item object are accepted too."""
    data = request.data
    if isinstance(data, list):
        return {"items": data}
    if isinstance(data, dict) and "items" not in data:
        return {"items": [data]}
    return data


class FeedbackCreate(APIView):
    @extend_schema(request=s.FeedbackBatchSerializer, responses={202: s.RecordedSerializer})
    def post(self, request: Request) -> Response:
        data = s.FeedbackBatchSerializer(data=_items(request))
        data.is_valid(raise_exception=True)
        items = [FeedbackItem(**item) for item in data.validated_data["items"]]
        return Response(feedback_record(items=items), status=status.HTTP_202_ACCEPTED)


class EventCreate(APIView):
    @extend_schema(request=s.EventBatchSerializer, responses={202: s.RecordedSerializer})
    def post(self, request: Request) -> Response:
        data = s.EventBatchSerializer(data=_items(request))
        data.is_valid(raise_exception=True)
        items = [EventItem(**item) for item in data.validated_data["items"]]
        return Response(business_events_record(items=items), status=status.HTTP_202_ACCEPTED)
