"""Content-Security-Policy on every page and API answer Django serves (Django 5.2 has no CSP of its own).

The console's scripts are static files (its charts read JSON blocks, never inline code), so scripts need no
'unsafe-inline'; styles keep it because Django's admin templates and ours use style attributes. The prediction
endpoints are answered by the ASGI front before Django and carry no HTML, so they are left as they are.
X-Frame-Options, Referrer-Policy, X-Content-Type-Options and HSTS come from Django's own middleware (settings).
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])  # fmt: skip


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.policy = getattr(settings, "MODELWORKS_CSP", POLICY)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        return response
