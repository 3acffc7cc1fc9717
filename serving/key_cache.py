"""Each web process keeps the API keys it has seen in memory, and forgets a key the moment it is revoked anywhere.
It also remembers DRF tokens it has verified, for TOKEN_SECONDS (see TokenCache).

Revocation publishes the key's hash on a Redis channel; a listener thread in every process evicts it. So the hot
path checks a key without any network round trip, and revocation still takes effect at once (the revoking process
evicts synchronously, the others within the pub/sub delivery time, milliseconds). If the listener loses Redis,
the process stops trusting its memory and reads keys from the database until it is subscribed again. Without
Redis (the embedded default) nothing is kept: every lookup reads the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from django.conf import settings
from django.db import connections

from serving.per_process import PerProcess
from serving.routing import BackgroundReads

logger = logging.getLogger(__name__)

CHANNEL = "modelworks:apikey-revoked"
ENTRY_SECONDS = 60.0  # also re-read now and then, so edits other than revocation (scopes, expiry) show up
RETRY_SECONDS = 1.0  # a background re-read that failed (the database away) is tried again after this
# A DRF token is trusted for this long after the database read that verified it: a deleted token, or one whose user
# was deactivated, stops working within it in every process (tokens have no revocation broadcast).
TOKEN_SECONDS = 5.0
# How long the request processor waits for the database read of a credential it has nothing in memory for; past it
# the request answers 503 with Retry-After (the read goes on, and remembers what it finds for the retry).
COLD_WAIT_SECONDS = 0.5


class KeyCache:
    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._entries: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._generation = 0  # bumped on every revocation heard, so a lookup racing one never stores stale data
        self._subscribed = threading.Event()
        self._refreshing: set[str] = set()
        self._failed: dict[str, float] = {}  # key hash -> when its last background re-read failed
        self._thread = threading.Thread(target=self._listen, name="apikey-revocations", daemon=True)
        self._thread.start()

    def get(self, key_hash: str) -> Any | None:
        if not self._subscribed.is_set():
            return None
        hit = self._entries.get(key_hash)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def get_expired(self, key_hash: str, max_age: float) -> Any | None:
        """An entry past its re-read time by at most `max_age` seconds (revocation still evicts it at once): what
        authenticates while the database is away or a re-read is on its way."""
        if not self._subscribed.is_set():
            return None
        hit = self._entries.get(key_hash)
        if hit is None or hit[0] + max_age < time.monotonic():
            return None
        return hit[1]

    def refresh_in_background(self, key_hash: str, read: Callable[[], Any | None]) -> None:
        """Re-read an entry on another thread (one at a time per key): `read` returns the entry, or None when the key
        is gone."""
        with self._lock:
            if key_hash in self._refreshing or time.monotonic() - self._failed.get(key_hash, -1e9) < RETRY_SECONDS:
                return
            self._refreshing.add(key_hash)
            generation = self._generation
        _refresher().submit(self._refresh, key_hash, read, generation)

    def _refresh(self, key_hash: str, read: Callable[[], Any | None], generation: int) -> None:
        try:
            entry = read()
        except Exception:
            logger.warning("could not re-read an API key; its last reading serves meanwhile", exc_info=True)
            with self._lock:
                self._failed[key_hash] = time.monotonic()
        else:
            with self._lock:
                self._failed.pop(key_hash, None)
            if entry is None:
                self.evict(key_hash)
            else:
                self.put(key_hash, entry, generation)
        finally:
            with self._lock:
                self._refreshing.discard(key_hash)
            connections.close_all()  # no request cycle closes this thread's connection

    def generation(self) -> int:
        return self._generation

    def put(self, key_hash: str, entry: Any, generation: int) -> None:
        with self._lock:
            if self._subscribed.is_set() and generation == self._generation:
                self._entries[key_hash] = (time.monotonic() + ENTRY_SECONDS, entry)

    def evict(self, key_hash: str) -> None:
        with self._lock:
            self._generation += 1
            self._entries.pop(key_hash, None)

    def publish_revocation(self, key_hash: str) -> None:
        self.evict(key_hash)
        try:
            redis.Redis.from_url(self._redis_url, **settings.REDIS_CLIENT_OPTIONS).publish(CHANNEL, key_hash)
        except redis.RedisError:
            logger.exception("could not broadcast an API key revocation; other processes re-read within %ss",
                             ENTRY_SECONDS)  # fmt: skip

    def wait_until_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def _listen(self) -> None:
        while True:
            try:
                pubsub = redis.Redis.from_url(self._redis_url, health_check_interval=10).pubsub()
                pubsub.subscribe(CHANNEL)
                for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        self._subscribed.set()
                    elif message["type"] == "message":
                        self.evict(message["data"].decode())
            except Exception:
                logger.warning("API key revocation listener lost Redis; reading keys from the database", exc_info=True)
            self._subscribed.clear()
            with self._lock:
                self._entries.clear()
                self._generation += 1
            time.sleep(1)


class TokenCache:
    """DRF tokens this process has verified, each with when the read that verified it started. Unknown or invalid
    tokens are not remembered (a caller sending random ones cannot grow it)."""

    def __init__(self) -> None:
        self._verified: dict[str, float] = {}
        self._users: dict[str, int] = {}  # token -> its user's id: the prediction log's caller
        self._lock = threading.Lock()

    def verified_at(self, token: str) -> float | None:
        return self._verified.get(token)

    def user_of(self, token: str) -> int | None:
        return self._users.get(token)

    def remember(self, token: str, read_at: float, user_id: int | None = None) -> None:
        with self._lock:
            if len(self._verified) >= 10_000:  # sweep the expired ones now and then
                oldest = time.monotonic() - TOKEN_SECONDS
                self._verified = {t: at for t, at in self._verified.items() if at > oldest}
                self._users = {t: u for t, u in self._users.items() if t in self._verified}
            self._verified[token] = max(read_at, self._verified.get(token, read_at))
            if user_id is not None:
                self._users[token] = user_id

    def forget(self, token: str) -> None:
        with self._lock:
            self._verified.pop(token, None)
            self._users.pop(token, None)


_refresher = PerProcess(lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="apikey-refresh"))
token_cache = PerProcess(TokenCache)
# Credential reads for the request processor: while one hangs, the others answer 503 at once instead of queueing.
# Their thread keeps its connection (close_when_idle=False): while Redis is away every keyed request reads its key
# from the database (revocations cannot be heard), and a new connection per read cut the answers of a 200 req/s
# stream to 40% in the fault suite (tests/platform/test_fault_suite.py).
credential_reads = BackgroundReads("credential-read", queue_behind_stuck=False, close_when_idle=False)
_key_cache = PerProcess(lambda: KeyCache(settings.REDIS_URL))


def key_cache() -> KeyCache | None:
    """This process's key cache, or None when there is no Redis to hear revocations on."""
    return _key_cache() if settings.REDIS_URL else None
