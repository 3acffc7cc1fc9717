"""Cached predictions per row: Redis in deployment (local memory embedded), keyed by version + canonical row hash."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from django.core.cache import cache

from config.cache import CacheUnavailable

logger = logging.getLogger(__name__)


def row_key(version_key: str, row: list[Any]) -> str:
    """`version_key` names the version and its artifact, so a recreated database never meets stale entries."""
    canonical = json.dumps(row, separators=(",", ":"), allow_nan=True)
    return f"pred:{version_key}:{hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()}"


def lookup(keys: list[str]) -> dict[str, Any]:
    """Cached results by key (one round trip for the whole batch); a broken or hung cache counts as all misses
    (its calls time out after REDIS_SOCKET_TIMEOUT_MS, and are skipped for a back-off after one fails)."""
    try:
        return cache.get_many(keys)
    except Exception:  # the cache is an optimisation: never fail a prediction because Redis is away
        return {}


def store(entries: dict[str, Any], ttl_seconds: int) -> None:
    try:
        cache.set_many(entries, timeout=ttl_seconds)
    except CacheUnavailable:
        pass  # Redis failed moments ago and is skipped for now (counted in modelworks_cache_skipped_total)
    except Exception:
        logger.warning("prediction cache unavailable; results not cached", exc_info=True)
