"""Liveness and readiness for load balancers and Kubernetes: unauthenticated, cheap, no secrets in the answer."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse

from serving.warmup import load_production_models


def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers: nothing else is checked, so a slow database never gets a pod restarted."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to take traffic: the database and cache answer and every production model is loaded here."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    if settings.REDIS_URL:
        try:
            cache.get("readyz")
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    if checks["database"] == "ok":
        failed = load_production_models()
        checks["models"] = "ok" if not failed else "error: " + ", ".join(failed)
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"ready": ready, "checks": checks}, status=200 if ready else 503)
