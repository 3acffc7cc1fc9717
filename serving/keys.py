"""API keys: creation (the raw key is shown once), lookup by hash, scopes, revocation and per-key throttling."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from config.storable import unstorable
from registry import audit
from serving import key_cache as remembered
from serving import metrics
from serving.key_cache import key_cache
from serving.models import ApiKey
from serving.routing import PROCESSOR_THREAD

KEY_PREFIX = "mwk_"
NAME_LENGTH = ApiKey._meta.get_field("name").max_length
SCOPE = re.compile(r"^((predict|deploy):(\*|[-a-zA-Z0-9_]+)|registry:(read|write|\*))$")
SCOPES_HELP = "predict:<model>, predict:*, registry:read, registry:write, deploy:<model> or deploy:*"


class CredentialUnavailable(DatabaseError):
    """The credential cannot be checked now: the database did not answer (in time) and nothing in memory vouches
    for it. A DatabaseError, so callers that handled one before still do; the hot path answers 503 with Retry-After."""

    def __init__(self, what: str, retry_after: int = 1) -> None:
        self.message = f"this {what} cannot be checked now: the database does not answer; retry shortly"
        super().__init__(self.message)
        self.retry_after = retry_after


TOKEN = re.compile(r"[0-9a-zA-Z]{1,40}")  # DRF's tokens are 40 hex digits; anything else cannot be one


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def scope_problems(scopes: Any) -> list[str]:
    if not isinstance(scopes, list) or not scopes:
        return [f"give at least one scope: {SCOPES_HELP}"]
    return [f"'{s}' is not a scope ({SCOPES_HELP})" for s in scopes
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
    if not isinstance(name, str) or not name.strip():
        errors["name"] = ["give the key a name"]
    elif problem := unstorable(name):
        errors["name"] = [f"cannot be stored: {problem}"]
    elif len(name.strip()) > NAME_LENGTH:
        errors["name"] = [f"at most {NAME_LENGTH} characters ({len(name.strip())} given)"]
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
    audit.record("api_key.created", target=key, before=None, after=_audited(key), actor=created_by,
                 source=audit.current_source())  # fmt: skip
    return key, raw


def _audited(key: ApiKey) -> dict[str, Any]:
    return audit.snapshot(key, ("name", "prefix", "scopes", "rate_limit_per_second", "expires_at", "revoked_at"))


@transaction.atomic
def api_key_change(*, key: ApiKey, actor: Any = None) -> ApiKey:
    """Save the console's change to a key (its rate limit or expiry: the form allows no more)."""
    stored = ApiKey.objects.select_for_update().get(pk=key.pk)
    before = _audited(stored)
    key.save()
    audit.record("api_key.changed", target=key, before=before, after=_audited(key), actor=actor,
                 source=audit.current_source())  # fmt: skip
    return key


_ENTRY_FIELDS = ("pk", "name", "scopes", "rate_limit_per_second", "expires_at", "revoked_at")


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor: Any = None) -> ApiKey:
    before = _audited(key)
    revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db()
    if revoked:
        audit.record("api_key.revoked", target=key, before=before, after=_audited(key), actor=actor,
                     source=audit.current_source())  # fmt: skip
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

    Served from this process's memory when it can be (serving/key_cache.py says why that is still safe). An entry due
    for its re-read keeps serving while the database is away, and on the request processor's thread (which must not
    wait on the database) while it is re-read in the background.
    """
    if not raw.startswith(KEY_PREFIX):
        return None
    key_hash = hash_key(raw)
    memory = key_cache()
    key = memory.get(key_hash) if memory is not None else None
    if key is None:
        expired = memory.get_expired(key_hash, settings.MODELWORKS_ROUTE_MAX_STALE_SECONDS) if memory else None
        on_processor = threading.current_thread().name == PROCESSOR_THREAD
        if expired is not None and on_processor:
            memory.refresh_in_background(key_hash, lambda: _read_key(key_hash))
            key = expired
        else:
            generation = memory.generation() if memory is not None else 0

            def read() -> ApiKey | None:
                found = _read_key(key_hash)
                if found is not None and memory is not None:
                    memory.put(key_hash, found, generation)
                return found

            try:
                key = _off_processor(("api-key", key_hash), read) if on_processor else read()
            except (DatabaseError, FutureTimeout):
                if expired is None:
                    raise CredentialUnavailable("API key") from None
                key = expired
            if key is None:
                return None
    return key if key.active else None


def _off_processor(key: tuple, read):
    """A credential read the request processor waits for at most COLD_WAIT_SECONDS (serving/routing.py's
    BackgroundReads): a hung database costs it that, not the hang."""
    return remembered.credential_reads.read(key, read, remembered.COLD_WAIT_SECONDS)


def token_valid(raw: str) -> bool:
    """The DRF token exists and its user is active. Trusted for key_cache.TOKEN_SECONDS after the read that verified
    it, so the hot path does not query the database per request and a deleted token or a deactivated user stops
    working within that time. On the request processor's thread the read is bounded (COLD_WAIT_SECONDS) and a token
    in use is re-read in the background once half its time is gone. CredentialUnavailable when the database cannot
    tell now."""
    if not TOKEN.fullmatch(raw):
        return False
    memory = remembered.token_cache()
    verified = memory.verified_at(raw)
    age = None if verified is None else time.monotonic() - verified
    on_processor = threading.current_thread().name == PROCESSOR_THREAD
    if age is not None and age < remembered.TOKEN_SECONDS:
        if on_processor and age > remembered.TOKEN_SECONDS / 2:
            remembered.credential_reads.start(("token", raw), lambda: _read_token(raw), remembered.COLD_WAIT_SECONDS)
        return True
    try:
        return _off_processor(("token", raw), lambda: _read_token(raw)) if on_processor else _read_token(raw)
    except (DatabaseError, FutureTimeout):
        raise CredentialUnavailable("token") from None


def _read_token(raw: str) -> bool:
    started = time.monotonic()  # trusted from before the read: a deletion during it is not missed
    user_id = Token.objects.filter(key=raw, user__is_active=True).values_list("user_id", flat=True).first()
    valid = user_id is not None
    memory = remembered.token_cache()
    if valid:
        memory.remember(raw, started, user_id)
    else:
        memory.forget(raw)
    return valid


def _read_key(key_hash: str) -> ApiKey | None:
    row = ApiKey.objects.filter(key_hash=key_hash).values(*_ENTRY_FIELDS).first()
    # Kept whole: building a model instance per request costs time.
    return None if row is None else ApiKey(key_hash=key_hash, **row)


def throttle_retry_after(key: ApiKey) -> int | None:
    """Seconds to wait when the key is over its per-second limit (a fixed one-second window in the shared cache).

    While the shared cache is unavailable the window is counted in this process instead, and each such check is
    counted in modelworks_throttle_local_total: the key keeps its limit per process, never an error, never no limit.
    """
    if not key.rate_limit_per_second:
        return None
    window = int(time.time())
    try:
        count = _shared_count(f"throttle:{key.pk}:{window}")
    except Exception:  # Redis down, hung (timeouts) or skipped by the cache's back-off
        metrics.THROTTLE_LOCAL.inc()
        count = _local_count(key.pk, window)
    return 1 if count > key.rate_limit_per_second else None


def _shared_count(counter: str) -> int:
    if cache.add(counter, 1, timeout=2):
        return 1
    try:
        return cache.incr(counter)
    except ValueError:  # expired between add and incr
        cache.add(counter, 1, timeout=2)
        return 1


_local_windows: dict[int, tuple[int, int]] = {}  # key pk -> (window, requests in it), this process only
_local_lock = threading.Lock()


def _local_count(key_pk: int, window: int) -> int:
    with _local_lock:
        seen_window, count = _local_windows.get(key_pk, (window, 0))
        count = count + 1 if seen_window == window else 1
        _local_windows[key_pk] = (window, count)
        return count
