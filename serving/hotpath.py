"""The prediction hot path: plain Django views, deliberately without DRF's generic machinery.

Why: these endpoints are measured (bench/serving.py) against MLflow's scoring server, and DRF's request wrapping,
content negotiation, renderer and throttle classes cost more per request than the whole micro-batched model call
of a small model. So the views here authenticate, parse JSON and answer JsonResponse directly; the logic they call
lives in serving/services.py. The OpenAPI description of these endpoints is written out in serving/openapi.py.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from rest_framework.authtoken.models import Token

from serving import routing, services
from serving.auth import raw_key_from
from serving.keys import api_key_lookup, throttle_retry_after
from serving.validation import InputError


def error(status: int, detail: str, errors: list[dict[str, Any]] | None = None, **headers: str) -> JsonResponse:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    response = JsonResponse(body, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def authenticate(request: HttpRequest, scope: str) -> JsonResponse | None:
    """None when the caller may use `scope`; otherwise the 401/403/429 answer to send."""
    raw = raw_key_from(request)
    if raw is not None:
        key = api_key_lookup(raw)
        if key is None:
            return error(401, "unknown, expired or revoked API key", WWW_Authenticate="Api-Key")
        if not key.allows(scope):
            return error(403, f"this API key lacks the scope {scope}")
        retry = throttle_retry_after(key)
        if retry is not None:
            return error(429, "rate limit exceeded for this API key", Retry_After=str(retry))
        return None
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:6].lower() == "token ":
        if Token.objects.filter(key=header[6:].strip(), user__is_active=True).exists():
            return None
        return error(401, "invalid token", WWW_Authenticate="Api-Key")
    if request.user.is_authenticated:  # the admin session, as in the browsable API: CSRF applies
        rejected = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
        return None if rejected is None else error(403, "CSRF check failed for a session-authenticated request")
    return error(401, "authentication required: send 'Authorization: Api-Key <key>'", WWW_Authenticate="Api-Key")


def read_json(request: HttpRequest) -> Any:
    """The parsed body, or an error answer (413 over the size limit, 400 when not JSON)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        return error(413, f"the body is {length} bytes; the limit is {limit}")
    try:
        body = request.body
    except RequestDataTooBig:
        return error(413, f"the body is over the limit of {limit} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return error(400, f"the body is not valid JSON: {exc}")


def _query_version(request: HttpRequest) -> tuple[int | None, str | None] | JsonResponse:
    version, alias = request.GET.get("version"), request.GET.get("alias")
    if version is not None and alias is not None:
        return error(400, "give either ?version= or ?alias=, not both")
    if version is not None:
        if not version.isdigit() or int(version) < 1:
            return error(400, "?version= must be a positive integer")
        return int(version), None
    return None, alias


@csrf_exempt
def predict(request: HttpRequest, name: str) -> HttpResponse:
    if request.method != "POST":
        return error(405, "use POST", Allow="POST")
    denied = authenticate(request, f"predict:{name}")
    if denied is not None:
        return denied
    payload = read_json(request)
    if isinstance(payload, JsonResponse):
        return payload
    target = _query_version(request)
    if isinstance(target, JsonResponse):
        return target
    key = payload.get("key") if isinstance(payload, dict) else None
    if key is not None and not isinstance(key, str | int):
        return error(400, "'key' must be a string", [{"row": None, "field": "key", "message": "must be a string"}])
    try:
        result = services.predict(
            model_name=name,
            payload=payload,
            version=target[0],
            alias=target[1],
            routing_key=None if key is None else str(key),
            request_id=request.META.get("HTTP_X_REQUEST_ID"),
        )
    except InputError as exc:
        return error(exc.status, "the input does not match the model's signature", exc.errors)
    except routing.RouteError as exc:
        return error(exc.status, exc.message)
    except services.Unavailable as exc:
        return error(503, exc.message, Retry_After=str(exc.retry_after))
    # json.dumps directly: DjangoJSONEncoder's extra type checks cost time and answers are plain JSON values.
    response = HttpResponse(json.dumps(result.as_json()), content_type="application/json")
    response["X-Request-ID"] = result.request_id
    return response
