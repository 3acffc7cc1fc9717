"""On-demand features: functions registered in code that compute a view's feature from other values of the same
request, used when the online store has no fresh value for it (features/retrieval.py).

    from features.on_demand import on_demand_feature

    @on_demand_feature("patient_stats:area_ratio", inputs=["patient_stats:mean_area", "patient_stats:worst_area"])
    def area_ratio(values):
        return values["patient_stats:mean_area"] / values["patient_stats:worst_area"]

The function runs only when every input is known for the row; answering None means "cannot compute here".
Modules listed in MODELWORKS_FEATURE_MODULES are imported at startup so their registrations happen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from features.schema import parse_ref

OnDemandFunction = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class OnDemandFeature:
    ref: str
    inputs: tuple[str, ...]
    function: OnDemandFunction


_registry: dict[str, OnDemandFeature] = {}
_generation = 0  # bumped on every change, so callers caching what a request needs know to look again


def generation() -> int:
    return _generation


def on_demand_feature(ref: str, *, inputs: list[str]) -> Callable[[OnDemandFunction], OnDemandFunction]:
    """Register the decorated function as the way to compute `ref` from `inputs` (all "view:feature" refs)."""
    for name in [ref, *inputs]:
        if parse_ref(name) is None:
            raise ValueError(f"{name!r} is not a feature reference like 'view:feature'")

    def register(function: OnDemandFunction) -> OnDemandFunction:
        global _generation
        _registry[ref] = OnDemandFeature(ref, tuple(inputs), function)
        _generation += 1
        return function

    return register


def on_demand_for(ref: str) -> OnDemandFeature | None:
    return _registry.get(ref)


def unregister(ref: str) -> None:
    global _generation
    _registry.pop(ref, None)
    _generation += 1


def registered() -> list[OnDemandFeature]:
    return sorted(_registry.values(), key=lambda feature: feature.ref)
