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

PRODUCTION_REASON = f"alias:{PRODUCTION_ALIAS}"


class RouteError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
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


@dataclass(frozen=True)
class _Default:
    """A model's default route, cached as one entry: production, and the split with each arm's version resolved."""

    production: ModelVersion | RouteError
    split: traffic.Split | None = None
    arms: dict[str, tuple[ModelVersion | RouteError, str]] | None = None  # arm name -> (version, route reason)


def _load_default(model_name: str) -> _Default:
    production = _load_alias(model_name, PRODUCTION_ALIAS)
    if isinstance(production, RouteError):
        return _Default(production)
    split = traffic.active_split(production.model_id)
    if split is None:
        return _Default(production)
    arms = {arm.name: (_load_by_id(arm.version_id), f"{split.owner}:{arm.name}") for arm in split.arms}
    return _Default(production, split, arms)


def resolve(model_name: str, *, version: int | None = None, alias: str | None = None, key: str | None = None) -> Route:
    """The version that serves this request, and why. `key` (user or entity id) keeps a caller on one arm of a split."""
    split = arm = None
    if version is not None:
        found = _cached(("version", model_name, version), lambda: _load_pinned(model_name, version))
        reason = "pinned"
    elif alias is not None:
        found = _cached(("alias", model_name, alias), lambda: _load_alias(model_name, alias))
        reason = f"alias:{alias}"
    else:
        default = _cached(("default", model_name), lambda: _load_default(model_name))
        split = default.split
        if split is None:
            found, reason = default.production, PRODUCTION_REASON
        else:
            arm = split.arm_for(key)
            found, reason = default.arms[arm.name]
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
