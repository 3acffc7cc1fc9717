"""The short text forms the command line and the admin accept for arms, metrics and weights."""

from __future__ import annotations

from typing import Any


def metric(text: str) -> dict[str, str]:
    """'conversion:purchase', 'mean_value:order' or 'quality' (the services say what is wrong with it)."""
    kind, _, event = text.strip().partition(":")
    return {"kind": kind, "event": event} if event else {"kind": kind}


def arm(text: str) -> dict[str, Any]:
    """'NAME=VERSION:WEIGHT', e.g. control=1:50."""
    name, _, rest = text.strip().partition("=")
    version, _, weight = rest.partition(":")
    try:
        return {"name": name, "version": int(version), "weight": int(weight)}
    except ValueError:
        raise ValueError(f"{text.strip()}: expected NAME=VERSION:WEIGHT, e.g. control=1:50") from None


def weight(text: str) -> tuple[str, int]:
    """'ARM=WEIGHT', e.g. control=80."""
    name, _, value = text.strip().partition("=")
    try:
        return name, int(value)
    except ValueError:
        raise ValueError(f"{text.strip()}: expected ARM=WEIGHT, e.g. control=80") from None
