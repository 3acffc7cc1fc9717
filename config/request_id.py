"""Every request gets an id: the client's X-Request-ID when it is well-formed (serving's rule, so a prediction and
the audit entries of one request share it), else a fresh one. It is on `request.request_id`, echoed back in the
X-Request-ID response header, and set as the audit context (registry/audit.py) for the request's duration, with
the source the request came by (console, client or API).

The prediction endpoints served by the ASGI front never reach Django; they answer the same header themselves."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from registry import audit
from serving.services import new_request_id


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = new_request_id(request.META.get("HTTP_X_REQUEST_ID"))
        with audit.acting(audit.source_of(request), request=request, request_id=request.request_id):
            response = self.get_response(request)
        if "X-Request-ID" not in response:
            response["X-Request-ID"] = request.request_id
        return response
