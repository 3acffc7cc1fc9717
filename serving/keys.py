"""API keys: creation (the raw key is shown once), lookup by hash, scopes, revocation and per-key throttling."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from serving.key_cache import key_cache
from serving.models import ApiKey

KEY_PREFIX = "mwk_"
SCOPE = re.compile(r"^(predict:(\*|[-a-zA-Z0-9_]+)|registry:(read|write|\*))$")


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def scope_problems(scopes: Any) -> list[str]:
    if not isinstance(scopes, list) or not scopes:
        return ["give at least one scope: predict:<model>, predict:*, registry:read or registry:write"]
    return [f"'{s}' is not a scope (predict:<model>, predict:*, registry:read, registry:write)" for s in scopes
            if not isinstance(s, str) or not SCOPE.match(s)]  # fmt: skip


@transaction.atomic
def api_key_create(
    *,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    rate_limit_per_second: int = 0,
    created_by: Any = None,
) -> tuple[ApiKey, str]:
    """A new key and its raw value, which is never stored and cannot be shown again."""
    errors = {}
    if not name or not name.strip():
        errors["name"] = ["give the key a name"]
    if problems := scope_problems(scopes):
        errors["scopes"] = problems
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = ["the expiry is in the past"]
    if errors:
        raise ValidationError(errors)
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        name=name.strip(),
        prefix=raw[:12],
        key_hash=hash_key(raw),
        scopes=list(scopes),
        expires_at=expires_at,
        rate_limit_per_second=rate_limit_per_second,
        created_by=created_by if getattr(created_by, "pk", None) else None,
    )
    return key, raw


_ENTRY_FIELDS = ("pk", "name", "scopes", "rate_limit_per_second", "expires_at", "revoked_at")


@transaction.atomic
def api_key_revoke(*, key: ApiKey) -> ApiKey:
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db()
    cache_ = key_cache()
    if cache_ is not None:
        transaction.on_commit(lambda: cache_.publish_revocation(key.key_hash))
        cache_.evict(key.key_hash)
    return key


def raw_api_key(authorization: str, api_key_header: str | None) -> str | None:
    """The API key a request presents (`Authorization: Api-Key ...` or `X-Api-Key`), if any."""
    if authorization[:8].lower() == "api-key ":
        return authorization[8:].strip()
    return api_key_header or None


def api_key_lookup(raw: str) -> ApiKey | None:
    """The active key with this raw value, or None (unknown, expired or revoked).

    Served from this process's memory when it can be (serving/key_cache.py says why that is still safe).
    """
    if not raw.startswith(KEY_PREFIX):
        return None
    key_hash = hash_key(raw)
    memory = key_cache()
    key = memory.get(key_hash) if memory is not None else None
    if key is None:
        generation = memory.generation() if memory is not None else 0
        row = ApiKey.objects.filter(key_hash=key_hash).values(*_ENTRY_FIELDS).first()
        if row is None:
            return None
        key = ApiKey(key_hash=key_hash, **row)  # kept whole: building a model instance per request costs time
        if memory is not None:
            memory.put(key_hash, key, generation)
    return key if key.active else None


def throttle_retry_after(key: ApiKey) -> int | None:
    """Seconds to wait when the key is over its per-second limit (a fixed one-second window in the shared cache)."""
    if not key.rate_limit_per_second:
        return None
    window = int(time.time())
    counter = f"throttle:{key.pk}:{window}"
    if cache.add(counter, 1, timeout=2):
        count = 1
    else:
        try:
            count = cache.incr(counter)
        except ValueError:  # expired between add and incr
            cache.add(counter, 1, timeout=2)
            count = 1
    return 1 if count > key.rate_limit_per_second else None
