"""Which version serves a request: the one place rollouts and experiments will plug into.

Today: an explicit `?version=N` pin, an `?alias=NAME`, or the `production` alias by default. Lookups are cached in
the process for MODELWORKS_ROUTE_TTL_MS (default 500 ms), so when an alias moves every process follows within a
second, while the hot path does not query the database on every request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings

from registry.models import ModelAlias, ModelVersion, RegisteredModel, RegistryEvent
from registry.services import PRODUCTION_ALIAS


class RouteError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Route:
    version: ModelVersion
    reason: str  # why this version: "pinned", "alias:production", ...


_cache: dict[tuple, tuple[float, object]] = {}
_lock = threading.Lock()
_refreshing: set[tuple] = set()


def _cached(key: tuple, load):
    """The cached value while fresh. When it ages out, one thread reloads it while the others keep using the old
    value for those few milliseconds, so a busy process never sends a burst of identical queries."""
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and now - hit[0] < settings.MODELWORKS_ROUTE_TTL_MS / 1000:
        return hit[1]
    with _lock:
        if hit is not None and key in _refreshing:
            return hit[1]
        _refreshing.add(key)
    try:
        value = load()
        with _lock:
            _cache[key] = (time.monotonic(), value)
    finally:
        with _lock:
            _refreshing.discard(key)
    return value


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def versions_for_serving():
    return ModelVersion.objects.select_related("model", "model__serving_policy")


def _load_alias(model_name: str, alias: str) -> ModelVersion | RouteError:
    found = ModelAlias.objects.filter(model__name=model_name, name=alias).values_list("version_id", flat=True).first()
    if found is None:
        if not RegisteredModel.objects.filter(name=model_name).exists():
            return RouteError(404, f"no model named '{model_name}'")
        return RouteError(404, f"{model_name} has no alias '{alias}'")
    return versions_for_serving().get(pk=found)


def _load_pinned(model_name: str, number: int) -> ModelVersion | RouteError:
    version = versions_for_serving().filter(model__name=model_name, version=number).first()
    if version is None:
        if not RegisteredModel.objects.filter(name=model_name).exists():
            return RouteError(404, f"no model named '{model_name}'")
        return RouteError(404, f"{model_name} has no version {number}")
    return version


def resolve(model_name: str, *, version: int | None = None, alias: str | None = None, key: str | None = None) -> Route:
    """The version that serves this request, and why. `key` is the routing key later stages hash for stickiness."""
    if version is not None:
        found = _cached(("version", model_name, version), lambda: _load_pinned(model_name, version))
        reason = "pinned"
    else:
        alias = alias or PRODUCTION_ALIAS
        found = _cached(("alias", model_name, alias), lambda: _load_alias(model_name, alias))
        reason = f"alias:{alias}"
    if isinstance(found, RouteError):
        raise found
    if not found.servable:
        raise RouteError(409, f"{found} is {found.status if found.integrity_failed_at is None else 'tampered'} "
                              "and cannot be served")  # fmt: skip
    return Route(found, reason)


def fallback_for(version: ModelVersion) -> ModelVersion | None:
    """The version production pointed at before this one, if it can still be served (the breaker's fallback)."""

    def load():
        moves = RegistryEvent.objects.filter(
            model_id=version.model_id, action="alias.moved", after__alias=PRODUCTION_ALIAS,
            after__version=version.version,
        ).order_by("-id")  # fmt: skip
        for event in moves[:1]:
            previous = versions_for_serving().filter(model_id=version.model_id, version=event.before["version"]).first()
            if previous is not None and previous.servable:
                return previous
        return None

    return _cached(("fallback", version.pk), load)
