"""Who may read the Prometheus endpoints: a scraper with the bearer token, or one in the allowed networks.

Each scrape renders every metric family (and /metrics/monitoring reads the database), so an open endpoint is a cheap
way to slow predictions down: four clients on /metrics raised prediction p99 from 14 to 64 ms in issue 21's run.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from functools import cache, wraps

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse


@cache
def _networks(allowed: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(net, strict=False) for net in allowed)
    except ValueError as exc:
        raise ImproperlyConfigured(f"MODELWORKS_METRICS_ALLOWED_NETWORKS: {exc}") from None


def may_scrape(request: HttpRequest) -> bool:
    token = settings.MODELWORKS_METRICS_TOKEN
    sent = request.META.get("HTTP_AUTHORIZATION", "")
    if token and sent[:7].lower() == "bearer " and hmac.compare_digest(sent[7:].strip().encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in net for net in _networks(tuple(settings.MODELWORKS_METRICS_ALLOWED_NETWORKS)))


def scrape_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not may_scrape(request):
            response = HttpResponse(
                "metrics need the scrape token (Authorization: Bearer $MODELWORKS_METRICS_TOKEN) or an address in "
                "MODELWORKS_METRICS_ALLOWED_NETWORKS\n",
                status=401,
                content_type="text/plain; charset=utf-8",
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        return view(request, *args, **kwargs)

    return guarded
