"""API keys REST API: admins (the admin role, superusers) manage keys; an API key, whatever its scopes, never can
(403). The permission is the API's map's (config/access.py)."""

from __future__ import annotations

from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from serving.api import serializers as s
from serving.keys import api_key_create, api_key_revoke
from serving.models import ApiKey

_ACTIVE = {"true": True, "1": True, "false": False, "0": False}


class ApiKeyListCreate(generics.ListAPIView):
    serializer_class = s.ApiKeySerializer

    def get_queryset(self):
        keys = ApiKey.objects.select_related("created_by").order_by("-created_at", "-id")
        active = self.request.query_params.get("active")
        if active is None:
            return keys
        if active.lower() not in _ACTIVE:
            raise serializers.ValidationError({"active": ["true or false"]})
        live = Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        return keys.filter(live) if _ACTIVE[active.lower()] else keys.exclude(live)

    @extend_schema(parameters=[OpenApiParameter("active", bool, description="only active (or inactive) keys")])
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(request=s.ApiKeyCreateSerializer, responses={201: s.ApiKeyCreatedSerializer})
    def post(self, request: Request) -> Response:
        data = s.ApiKeyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key, raw = api_key_create(**data.validated_data, created_by=request.user)
        key.key = raw
        return Response(s.ApiKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)


class ApiKeyDetail(generics.RetrieveAPIView):
    serializer_class = s.ApiKeySerializer
    queryset = ApiKey.objects.select_related("created_by")


class ApiKeyRevoke(APIView):
    @extend_schema(request=None, responses={200: s.ApiKeySerializer, 409: None})
    def post(self, request: Request, pk: int) -> Response:
        key = get_object_or_404(ApiKey.objects.select_related("created_by"), pk=pk)
        if key.revoked_at is not None:
            detail = f"API key {key.pk} ({key.name}) was already revoked at {key.revoked_at.isoformat()}"
            return Response({"detail": detail}, status=status.HTTP_409_CONFLICT)
        return Response(s.ApiKeySerializer(api_key_revoke(key=key, actor=request.user)).data)
