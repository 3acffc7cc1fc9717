"""The API's permission map: what each route needs, keyed by URL name and method (registry/permissions.py decides).

RoutePermission is the API's default permission class (settings.REST_FRAMEWORK). A route missing from RULES is
refused to everyone but superusers, and tests/test_permissions.py fails until every URL is classified. Lookups of
the rows a route names (a rollout, an experiment) go through the app registry, so this module imports no app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from rest_framework import exceptions
from rest_framework import permissions as drf

from registry import permissions
from registry.permissions import ADMIN, DEPLOY, PREDICT, READ, WRITE

ModelOf = Callable[[dict[str, Any]], Any]


def _by_name(kwargs: dict[str, Any]):
    return apps.get_model("registry", "RegisteredModel").objects.filter(name=kwargs.get("name")).first()


def _model_of(app_model: str, field: str, kwarg: str) -> ModelOf:
    def model_of(kwargs: dict[str, Any]):
        row = apps.get_model(app_model).objects.select_related("model").filter(**{field: kwargs.get(kwarg)}).first()
        return row.model if row is not None else None

    return model_of


_of_rollout = _model_of("rollouts.Rollout", "pk", "pk")
_of_experiment = _model_of("experiments.Experiment", "name", "name")
_of_monitor = _model_of("monitoring.Monitor", "pk", "pk")
_of_batch_job = _model_of("serving.BatchJob", "pk", "pk")


@dataclass(frozen=True)
class Need:
    """`permission` (a name, or a function of the request and the model) on the model `model_of` finds, if any."""

    permission: str | Callable[[Any, dict[str, Any], Any], str]
    model_of: ModelOf | None = None

    def resolve(self, request, kwargs: dict[str, Any]) -> tuple[str, Any]:
        model = self.model_of(kwargs) if self.model_of is not None else None
        permission = self.permission(request, kwargs, model) if callable(self.permission) else self.permission
        return permission, model


def _alias_in_url(request, kwargs: dict[str, Any], model) -> str:
    return permissions.alias_permission(model, kwargs["alias"]) if model is not None else WRITE


def _alias_in_body(request, kwargs: dict[str, Any], model) -> str:
    alias = request.data.get("alias") if hasattr(request.data, "get") else None
    return permissions.alias_permission(model, alias) if model is not None and isinstance(alias, str) else WRITE


def _rw(write: Need | None = None, *, method: str = "POST") -> dict[str, Need]:
    """Reads need read; the write method (if any) needs what `write` says."""
    return {"GET": Need(READ), **({method: write} if write is not None else {})}


ROLLOUT_CONTROLS = ("pause", "resume", "promote", "abort")
ALERT_ACTIONS = ("acknowledge", "resolve", "silence")

RULES: dict[str, dict[str, Need]] = {
    # registry
    "model-list": _rw(Need(WRITE)),
    "model-detail": _rw(Need(WRITE, _by_name), method="PATCH"),
    "version-list": _rw(Need(WRITE, _by_name)),
    "version-detail": _rw(),
    "version-archive": {"POST": Need(WRITE, _by_name)},
    "version-onnx": {"POST": Need(WRITE, _by_name)},
    "version-runtime": {"PUT": Need(WRITE, _by_name)},
    "version-quantize": {"POST": Need(WRITE, _by_name)},
    "artifact": _rw(),
    "alias-list": _rw(Need(_alias_in_body, _by_name)),
    "alias-detail": {**_rw(Need(_alias_in_url, _by_name), method="PUT"), "DELETE": Need(_alias_in_url, _by_name)},
    "event-list": _rw(),
    # webhook endpoints (their URLs often embed tokens, their secrets sign): admins only, never an API key
    "webhook-list": {"GET": Need(ADMIN), "POST": Need(ADMIN)},
    "webhook-detail": {"GET": Need(ADMIN), "DELETE": Need(ADMIN)},
    "webhook-deliveries": {"GET": Need(ADMIN)},
    # rollouts
    "rollout-list": _rw(Need(DEPLOY, _by_name)),
    "model-rollback": {"POST": Need(DEPLOY, _by_name)},
    "rollout-detail": _rw(),
    **{f"rollout-{action}": {"POST": Need(DEPLOY, _of_rollout)} for action in ROLLOUT_CONTROLS},
    # monitoring
    "feedback": {"POST": Need(WRITE)},
    "events": {"POST": Need(WRITE)},
    "monitor-list": _rw(Need(WRITE)),
    "monitor-detail": _rw(),
    "monitor-run": {"POST": Need(WRITE, _of_monitor)},
    "monitor-reports": _rw(),
    "monitor-alerts": _rw(),
    "alert-list": _rw(),
    "alert-detail": _rw(),
    **{f"alert-{action}": {"POST": Need(WRITE)} for action in ALERT_ACTIONS},
    "reference": {"POST": Need(WRITE, _by_name)},
    "distill": {"POST": Need(WRITE, _by_name)},
    "quality": _rw(),
    # experiments: running one is a data scientist's; concluding it moves production
    "experiment-list": _rw(Need(WRITE)),
    "experiment-detail": _rw(),
    "experiment-start": {"POST": Need(WRITE, _of_experiment)},
    "experiment-stop": {"POST": Need(WRITE, _of_experiment)},
    "experiment-weights": {"POST": Need(WRITE, _of_experiment)},
    "experiment-conclude": {"POST": Need(DEPLOY, _of_experiment)},
    "experiment-results": _rw(),
    "experiment-events": _rw(),
    # feature store: online and historical reads are POSTed but change nothing
    "feature-entity-list": _rw(Need(WRITE)),
    "feature-view-list": _rw(Need(WRITE)),
    "feature-view-detail": _rw(),
    "feature-online": {"POST": Need(READ)},
    "feature-historical": {"POST": Need(READ)},
    "feature-push": {"POST": Need(WRITE)},
    # batch scoring: whoever may predict with the model (an API key with predict:<model>, any active user)
    "batch-job-list": {"GET": Need(PREDICT, _by_name), "POST": Need(PREDICT, _by_name)},
    "batch-job-detail": {"GET": Need(PREDICT, _of_batch_job)},
    "batch-job-cancel": {"POST": Need(PREDICT, _of_batch_job)},
    # API keys: admins only, never an API key
    "api-key-list": {"GET": Need(ADMIN), "POST": Need(ADMIN)},
    "api-key-detail": {"GET": Need(ADMIN)},
    "api-key-revoke": {"POST": Need(ADMIN)},
    # subject rights (GDPR): erasure and export of everything held for one key are an admin's
    "subject-erase": {"POST": Need(ADMIN)},
    "subject-export": {"POST": Need(ADMIN)},
    # the audit trail: actors, addresses and raw before/after are for admins only
    "audit-list": {"GET": Need(ADMIN)},
    # Not here: the prediction endpoints and `prediction` (GET /api/v1/predictions/{id}, an asynchronous
    # prediction's answer) are plain views that authenticate as predict does (serving/hotpath.py); who may read an
    # answer is who sent the request, or an admin (serving/api/predictions.py). tests/test_permissions.py lists them.
}


def need_of(url_name: str | None, method: str) -> Need | None:
    rules = RULES.get(url_name or "", {})
    if method == "HEAD":
        method = "GET"
    if method == "OPTIONS":
        return Need(READ)
    return rules.get(method)


class RoutePermission(drf.BasePermission):
    """What RULES says the route needs, checked by registry.permissions.check (a 403 naming what is missing)."""

    message = "this route is not in the permission map (config/access.py)"

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False  # DRF answers 401 with the authenticator's challenge
        match = request._request.resolver_match
        need = need_of(match.url_name if match else None, request.method)
        if need is None and getattr(view, request.method.lower(), None) is None:
            return True  # the view answers 405 itself
        if need is None:
            return bool(request.user.is_superuser)  # unclassified: refused, and the matrix test fails
        permission, model = need.resolve(request, match.kwargs)
        try:
            permissions.check(request.user, permission, model)
        except permissions.PermissionRefused as refused:
            # DRF's own exception: the browsable API asks this class about forms it might show and expects that one
            raise exceptions.PermissionDenied(refused.as_response_body()) from None
        return True
