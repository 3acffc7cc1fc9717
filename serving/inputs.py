"""Input hooks: how an app above serving turns a prediction request's payload into the model's inputs.

Serving imports no app above it. The feature store (features/serving.py: entity ids in, feature values out) plugs in
here the way rollouts and experiments plug into the router (serving/traffic.py): it registers a hook in its
`AppConfig.ready`. A hook takes the payload and the serving version's signature and returns the payload to validate
and its per-row report (None when it did nothing); it raises InputError for the caller's mistakes and
serving.services.Unavailable when what it reads from is away. With no hook registered, payloads pass through
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Report = list[dict[str, list[str]]]
InputHook = Callable[[Any, dict[str, Any]], tuple[Any, Report | None]]

_hooks: list[InputHook] = []


def register_input_hook(hook: InputHook) -> None:
    """Called by an app that fills in model inputs, in its AppConfig.ready."""
    if hook not in _hooks:
        _hooks.append(hook)


def resolve_inputs(payload: Any, signature: dict[str, Any]) -> tuple[Any, Report | None]:
    """The payload after every registered hook, and the last report a hook gave (None: no hook did anything)."""
    report = None
    for hook in _hooks:
        payload, found = hook(payload, signature)
        if found is not None:
            report = found
    return payload, report
