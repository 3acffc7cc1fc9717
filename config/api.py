"""API-wide glue: turn service-layer validation errors into DRF's 400 answers with field-level detail."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import UnreadablePostError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from config.queueing import TaskNotQueued
from registry.locking import CONFLICT_MESSAGE, ConcurrentChangeError, is_conflict
from registry.permissions import PermissionRefused
from registry.traffic import TrafficConflict
from serving.services import Unavailable


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Services raise django's ValidationError (they know nothing of HTTP); answer it like a serializer error."""
    if isinstance(exc, PermissionRefused):
        # registry/permissions.py: the body names the missing permission ("deploy:churn").
        return Response(exc.as_response_body(), status=403)
    if isinstance(exc, TrafficConflict):
        # Refused because a rollout or experiment holds the model's traffic (registry/traffic.py): a conflict with
        # the platform's state, not a malformed request.
        return Response(exc.message_dict, status=409)
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            detail: Any = exc.message_dict
        else:
            detail = {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, ConcurrentChangeError) or (isinstance(exc, OperationalError) and is_conflict(exc)):
        # A race lost to another change of the same model (registry.locking): nothing stored, the client retries.
        return Response({"detail": CONFLICT_MESSAGE}, status=409, headers={"Retry-After": "1"})
    elif isinstance(exc, TaskNotQueued):
        # The broker is hung or down (config/queueing.py): a bounded wait, then this, never a hang or a 500.
        return Response({"detail": str(exc)}, status=503, headers={"Retry-After": str(exc.retry_after)})
    elif isinstance(exc, OperationalError | InterfaceError | Unavailable):
        # The database (or what a service needs of it) does not answer: the server's failure, for a retry, not a 500.
        detail = getattr(exc, "message", None) or "the database is not answering; retry shortly"
        return Response({"detail": detail}, status=503, headers={"Retry-After": "5"})
    elif isinstance(exc, UnreadablePostError):
        # The client went away or the web worker timed its body out (config/asgi.py): nothing was parsed or stored.
        exc = exceptions.ParseError("the request body could not be read in full")
    return drf_exception_handler(exc, context)
