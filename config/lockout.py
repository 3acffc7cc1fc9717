"""Lockout after repeated failed logins (django-axes), for the admin login and POST /api/v1/auth/token/ alike.

django-axes counts the failures per username and client address (settings AXES_*) and refuses that pair during the
cool-off, a correct password included. This module adds what the platform needs on top: only logins made from a web
request are counted (a management command, a shell or a test client's `login()` has no address to lock), and the
refusal says in words when to try again, as JSON for the API and as a page for the console.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_client_username, get_cool_off
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.utils import timezone


class WebLoginLockout(AxesStandaloneBackend):
    """AxesStandaloneBackend for logins that come with a request; the others it leaves to the next backend."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None, password: str | None = None,
                     **kwargs: Any) -> None:  # fmt: skip
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def client_address(request: HttpRequest) -> str | None:
    """AXES_CLIENT_IP_CALLABLE: REMOTE_ADDR, or behind a trusted proxy the address it appended to X-Forwarded-For."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.MODELWORKS_TRUST_X_FORWARDED_FOR and forwarded.strip():
        return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR")


def in_words(delta: timedelta) -> str:
    minutes = math.ceil(delta.total_seconds() / 60)
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = math.ceil(minutes / 60)
    return f"{hours} hour{'s' if hours != 1 else ''}"


def lockout_message(username: str, cool_off: timedelta) -> str:
    until = (timezone.now() + cool_off).strftime("%H:%M UTC")
    who = f"'{username}'" if username else "this account"
    return (
        f"Too many failed logins for {who} from your address: try again in {in_words(cool_off)} (after {until}). "
        "Each attempt before then, even with the right password, starts the wait again."
    )


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: 429 with Retry-After and the message; the cool-off restarts with every attempt
    (axes' AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT), so it runs from now."""
    cool_off = get_cool_off(request) or timedelta(minutes=15)
    message = lockout_message(get_client_username(request, credentials) or "", cool_off)
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": message}, status=429)
    else:
        context = {**admin.site.each_context(request), "title": "Login locked", "message": message}
        response = TemplateResponse(request, "admin/lockout.html", context, status=429).render()
    response["Retry-After"] = str(int(cool_off.total_seconds()))
    return response
