"""Which version serves a request: the one place rollouts and experiments plug into.

An explicit `?version=N` pin or `?alias=NAME` is served as asked. Otherwise the model's production traffic goes to the
`production` alias, unless a rollout or an experiment splits it (serving/traffic.py): then the request's arm decides.
Lookups are cached in the process for MODELWORKS_ROUTE_TTL_MS (default 500 ms), so when an alias moves or a split
changes every process follows within a second, while the hot path does not query the database on every request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings

from registry.models import ModelAlias, ModelVersion, RegisteredModel
from registry.selectors import previous_production
from registry.services import PRODUCTION_ALIAS
from serving import traffic


class RouteError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Route:
    version: ModelVersion
    reason: str  # why this version: "pinned", "alias:production", "rollout:7:candidate", ...
    split: traffic.Split | None = None
    arm: traffic.Arm | None = None


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


def _load_by_id(version_id: int) -> ModelVersion | RouteError:
    found = versions_for_serving().filter(pk=version_id).first()
    return found if found is not None else RouteError(404, f"version id {version_id} no longer exists")


def version_by_id(version_id: int) -> ModelVersion:
    found = _cached(("id", version_id), lambda: _load_by_id(version_id))
    if isinstance(found, RouteError):
        raise found
    return found


def resolve(model_name: str, *, version: int | None = None, alias: str | None = None, key: str | None = None) -> Route:
    """The version that serves this request, and why. `key` (user or entity id) keeps a caller on one arm of a split."""
    split = arm = None
    if version is not None:
        found = _cached(("version", model_name, version), lambda: _load_pinned(model_name, version))
        reason = "pinned"
    else:
        target = alias or PRODUCTION_ALIAS
        found = _cached(("alias", model_name, target), lambda: _load_alias(model_name, target))
        reason = f"alias:{target}"
        if alias is None and not isinstance(found, RouteError):
            model_id = found.model_id
            split = _cached(("split", model_id), lambda: traffic.active_split(model_id))
            if split is not None:
                arm = split.arm_for(key)
                found = _cached(("id", arm.version_id), lambda: _load_by_id(arm.version_id))
                reason = f"{split.owner}:{arm.name}"
                if split.on_route is not None:
                    split.on_route(arm, key)
    if isinstance(found, RouteError):
        raise found
    if not found.servable:
        raise RouteError(409, f"{found} is {found.status if found.integrity_failed_at is None else 'tampered'} "
                              "and cannot be served")  # fmt: skip
    return Route(found, reason, split, arm)


def fallback_for(route: Route) -> ModelVersion | None:
    """Who answers when the routed version fails (the breaker's fallback): for a split's other arms its first arm
    (a rollout's baseline, an experiment's control); otherwise the version production pointed at before this one,
    if it can still be served."""
    version = route.version
    if route.split is not None and route.arm is not route.split.arms[0]:
        control_id = route.split.arms[0].version_id
        found = _cached(("id", control_id), lambda: _load_by_id(control_id))
        return None if isinstance(found, RouteError) or not found.servable else found

    def load():
        previous = previous_production(version)
        return previous if previous is not None and previous.servable else None

    return _cached(("fallback", version.pk), load)
