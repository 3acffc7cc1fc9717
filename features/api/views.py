"""Feature store REST API: validate input, call one service or selector, answer."""

from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from features import definitions, services
from features.api import serializers as s
from features.models import Entity, FeatureView
from features.retrieval import get_online_features


def _rejected(exc: services.RowsRejected) -> Response:
    return Response({"detail": "rows rejected; nothing was stored", "errors": exc.errors}, status=400)


class EntityListCreate(generics.ListAPIView):
    serializer_class = s.EntitySerializer
    queryset = Entity.objects.all()

    @extend_schema(request=s.EntityWriteSerializer, responses={200: s.EntitySerializer})
    def post(self, request: Request) -> Response:
        plan = definitions.definitions_apply(entities=[request.data], views=[])
        entity = Entity.objects.get(name=request.data["name"])
        return Response({**s.EntitySerializer(entity).data, "changes": plan}, status=status.HTTP_200_OK)


class FeatureViewListCreate(generics.ListAPIView):
    serializer_class = s.FeatureViewSerializer
    queryset = FeatureView.objects.select_related("entity")

    @extend_schema(request=s.FeatureViewWriteSerializer, responses={200: s.FeatureViewSerializer})
    def post(self, request: Request) -> Response:
        plan = definitions.definitions_apply(entities=[], views=[request.data])
        view = FeatureView.objects.select_related("entity").get(name=request.data["name"])
        return Response({**s.FeatureViewSerializer(view).data, "changes": plan}, status=status.HTTP_200_OK)


class FeatureViewDetail(APIView):
    @extend_schema(responses=s.FeatureViewSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(s.FeatureViewSerializer(get_object_or_404(FeatureView, name=name)).data)


class Push(APIView):
    @extend_schema(request=s.PushSerializer, responses={200: None})
    def post(self, request: Request, name: str) -> Response:
        view = get_object_or_404(FeatureView.objects.select_related("entity"), name=name)
        rows = request.data.get("rows") if isinstance(request.data, dict) else None
        if isinstance(rows, list) and len(rows) > settings.MODELWORKS_FEATURES_MAX_ROWS:
            return Response({"rows": [f"at most {settings.MODELWORKS_FEATURES_MAX_ROWS} rows per push"]}, status=400)
        try:
            return Response(services.feature_values_push(view=view, rows=rows))
        except services.RowsRejected as exc:
            return _rejected(exc)


class Online(APIView):
    @extend_schema(request=s.OnlineRequestSerializer, responses={200: None})
    def post(self, request: Request) -> Response:
        data = s.OnlineRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        entities, overrides = data.validated_data["entities"], data.validated_data.get("overrides")
        if len(entities) > settings.MODELWORKS_FEATURES_MAX_ROWS:
            return Response({"entities": [f"at most {settings.MODELWORKS_FEATURES_MAX_ROWS} rows"]}, status=400)
        answer = get_online_features(entities, data.validated_data["features"], overrides=overrides)
        return Response(answer.as_json())
