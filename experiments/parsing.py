"""The short text forms the command line and the admin accept for arms, metrics and weights."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from registry import refs


def metric(text: str) -> dict[str, str]:
    """'conversion:purchase', 'mean_value:order' or 'quality' (the services say what is wrong with it)."""
    kind, _, event = text.strip().partition(":")
    return {"kind": kind, "event": event} if event else {"kind": kind}


def metric_spec(spec: Any) -> Any:
    """A metric as the services store it: the short text form parsed ('conversion:purchase'), an object such as
    {"kind": "conversion", "event": "purchase"} kept as given (the services say what is wrong with either)."""
    return metric(spec) if isinstance(spec, str) else spec


def arm(text: str) -> dict[str, Any]:
    """'NAME=VERSION:WEIGHT', e.g. control=1:50, treatment=models:/churn@staging:50 (VERSION is a number or a
    registry reference, registry/refs.py: a reference stays text here and the services resolve it)."""
    name, _, rest = text.strip().partition("=")
    version, _, weight = rest.rpartition(":")
    try:
        parsed = refs.parse(version)
        return {"name": name, "version": parsed.version if parsed.model is None else version, "weight": int(weight)}
    except (ValueError, ValidationError):
        raise ValueError(
            f"{text.strip()}: expected NAME=VERSION:WEIGHT, e.g. control=1:50 or control=models:/NAME@production:50"
        ) from None


def weight(text: str) -> tuple[str, int]:
    """'ARM=WEIGHT', e.g. control=80."""
    name, _, value = text.strip().partition("=")
    try:
        return name, int(value)
    except ValueError:
        raise ValueError(f"{text.strip()}: expected ARM=WEIGHT, e.g. control=80") from None
