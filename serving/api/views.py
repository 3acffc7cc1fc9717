"""API keys REST API: admins (the admin role, superusers) manage keys; an API key, whatever its scopes, never can
(403). The permission is the API's map's (config/access.py)."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.throttles import TokenEndpointThrottle
from registry import audit
from serving.api import serializers as s
from serving.keys import api_key_create, api_key_revoke
from serving.models import ApiKey
from serving.tokens import user_token_create

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


class ObtainToken(APIView):
    """POST username and password: a user's token (shown once) and when it expires. Failed logins count towards the
    lockout (config/lockout.py): past the limit the answer is 429 with Retry-After, a correct password included."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [TokenEndpointThrottle]

    @extend_schema(request=s.TokenRequestSerializer, responses={200: s.TokenSerializer, 400: None, 429: None})
    def post(self, request: Request) -> Response:
        data = s.TokenRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        # The Django request: django-axes marks a lockout on it, and its middleware answers for it.
        user = authenticate(request._request, **data.validated_data)
        if user is None or not user.is_active:
            return Response({"non_field_errors": ["Unable to log in with provided credentials."]}, status=400)
        token, raw = user_token_create(user=user)
        # Failed attempts are recorded by Django's user_login_failed signal (registry/audit.py), sent by authenticate.
        audit.record("auth.token", target=user, before=None, after=None, actor=user, source=audit.current_source(),
                     request=request)  # fmt: skip
        return Response({"token": raw, "expiry": token.expiry})
