"""Authentication for machine clients: `Authorization: Api-Key <key>` (or `X-Api-Key`), for DRF and the hot path."""

from __future__ import annotations

from django.http import HttpRequest
from rest_framework import authentication, exceptions

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

    @property
    def api_key_scopes(self) -> list[str]:
        """What registry.permissions reads to decide for a key (it never imports serving)."""
        return list(self.key.scopes)

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
