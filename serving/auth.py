"""Authentication for machine clients: `Authorization: Api-Key <key>` (or `X-Api-Key`), for DRF and the hot path."""

from __future__ import annotations

from django.http import HttpRequest
from rest_framework import authentication, exceptions, permissions

from serving.keys import api_key_lookup, raw_api_key
from serving.models import ApiKey


class ApiKeyUser:
    """Who an API key acts as: authenticated, but not a Django user (no pk, never staff)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.username = f"apikey:{key.name}"

    def __str__(self) -> str:
        return self.username


def raw_key_from(request: HttpRequest) -> str | None:
    return raw_api_key(request.META.get("HTTP_AUTHORIZATION", ""), request.META.get("HTTP_X_API_KEY"))


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        raw = raw_key_from(request._request)
        if raw is None:
            return None
        key = api_key_lookup(raw)
        if key is None:
            raise exceptions.AuthenticationFailed("unknown, expired or revoked API key")
        return ApiKeyUser(key), key

    def authenticate_header(self, request) -> str:
        return "Api-Key"


class IsAuthenticatedWithScope(permissions.IsAuthenticated):
    """Users need only to be logged in; API keys need registry:read to read and registry:write to change."""

    message = "this API key lacks the scope for this request"

    def has_permission(self, request, view) -> bool:
        if not super().has_permission(request, view):
            return False
        if isinstance(request.auth, ApiKey):
            needed = "registry:read" if request.method in permissions.SAFE_METHODS else "registry:write"
            return request.auth.allows(needed)
        return True
