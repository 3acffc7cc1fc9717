"""Per-caller rate limit on the management API (DRF's default throttle, settings.MODELWORKS_API_RATE).

The caller is the user, or the API key for key callers (who have no user). Anonymous requests are refused before
throttles run. The counters live in the shared cache; while Redis is unavailable each process counts on its own
(a limit per process, never an error). The prediction endpoints are not DRF views and are not throttled here.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache.backends.locmem import LocMemCache
from rest_framework.throttling import SimpleRateThrottle

_local = LocMemCache("management-throttle", {"MAX_ENTRIES": 10_000})


class ResilientRateThrottle(SimpleRateThrottle):
    """DRF's throttle, counting in this process while the shared cache is unavailable."""

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:  # noqa: BLE001 - Redis down, hung or skipped by the cache's back-off
            from serving.metrics import THROTTLE_LOCAL

            THROTTLE_LOCAL.inc()
            self.cache = _local
            return super().allow_request(request, view)


class ManagementRateThrottle(ResilientRateThrottle):
    scope = "management"

    def get_rate(self) -> str:
        return settings.MODELWORKS_API_RATE

    def get_cache_key(self, request, view) -> str | None:
        key = getattr(request.user, "key", None)
        if key is not None and getattr(key, "pk", None) is not None:
            return f"throttle_management_key_{key.pk}"
        if request.user and request.user.is_authenticated:
            return f"throttle_management_user_{request.user.pk}"
        return None


class TokenEndpointThrottle(ResilientRateThrottle):
    """POST /api/v1/auth/token/ per client address (settings.MODELWORKS_TOKEN_RATE), checked before the password
    hash is computed: the lockout counts per username, and an attacker can change usernames."""

    scope = "token"

    def get_rate(self) -> str:
        return settings.MODELWORKS_TOKEN_RATE

    def get_cache_key(self, request, view) -> str:
        return f"throttle_token_{self.get_ident(request)}"
