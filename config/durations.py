"""Durations as people write them: 3600, "90m", "12h", "30d", "2w" — read and written back the same way.

Used wherever a length of time is typed (feature view TTLs, cache TTLs, the console's forms), so a TTL reads "30d"
everywhere rather than 2592000 in one place and "30d" in another. It imports nothing from the apps, so every layer
may use it."""

from __future__ import annotations

import re
from typing import Any

PATTERN = re.compile(r"^(\d+)\s*([smhdw]?)$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
HELP = "seconds, or like 90s, 15m, 12h, 30d, 2w"


def parse_duration(raw: Any) -> int:
    """Seconds from an int or a string like "3600", "90m", "12h", "30d" or "2w". ValueError, in words, otherwise."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    match = PATTERN.match(raw.strip().lower()) if isinstance(raw, str) else None
    if match is None:
        raise ValueError(f"{raw!r} is not a duration ({HELP})")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def format_duration(seconds: int) -> str:
    """The shortest exact spelling: 2592000 -> "30d", 5400 -> "90m", 45 -> "45s", 0 -> "0s"."""
    for unit in ("w", "d", "h", "m"):
        size = UNIT_SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
