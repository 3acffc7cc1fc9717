"""The event types an endpoint may subscribe to. The registry's are here; apps above it add theirs from their
AppConfig.ready (rollouts: its decisions), since the registry imports none of them."""

from __future__ import annotations

_TYPES: dict[str, str] = {
    "version.registered": "a version was registered (its gate verdict follows)",
    "version.validated": "a version passed its quality gates",
    "version.rejected": "a version failed its quality gates",
    "alias.created": "an alias was created (the first production alias, say)",
    "alias.moved": "an alias moved to another version",
}


def register_event_types(types: dict[str, str]) -> None:
    """Add event types (name -> what it means); called from an app's AppConfig.ready."""
    _TYPES.update(types)


def event_types() -> dict[str, str]:
    return dict(_TYPES)
