"""Django's Redis cache backend, keeping one redis-py client per connection pool, and skipping Redis while it fails.

Django builds a new `redis.Redis` object for every cache call; its constructor fills a table of ~170 response
callbacks, which on the prediction hot path cost more than the Redis round trip itself. redis-py clients are
thread-safe and share the pool, so one per pool is enough.

The cache is an optimisation, and its calls run on the request processor's one thread (serving/front.py): while
Redis is hung every call would cost the socket timeout, and while it is down a refused connection each. So after a
call fails with a connection error or a timeout, every cache call in the process fails at once (`CacheUnavailable`)
for a back-off (MODELWORKS_CACHE_BACKOFF_MS, doubling while Redis keeps failing); then one call probes Redis again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

from serving import metrics

MAX_BACKOFF_FACTOR = 8


class CacheUnavailable(redis.ConnectionError):
    """Redis failed within the back-off: this call was not attempted."""


class Circuit:
    """Closed while Redis answers; open for a back-off after a failure, then one call probes it (half-open)."""

    def __init__(self, backoff_seconds: float) -> None:
        self._backoff = backoff_seconds
        self._factor = 0  # 0: closed; otherwise the current back-off is backoff * factor
        self._open_until = 0.0
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._factor > 0

    def check(self) -> None:
        """Raise CacheUnavailable while open; past the back-off let this one call through as the probe."""
        if not self._factor:
            return
        with self._lock:
            now = time.monotonic()
            if now < self._open_until:
                metrics.CACHE_SKIPPED.inc()
                raise CacheUnavailable("Redis failed recently; skipping it for a moment")
            self._open_until = now + self._backoff * self._factor  # the others keep skipping while this one probes

    def failed(self) -> None:
        metrics.CACHE_ERRORS.inc()
        with self._lock:
            self._factor = min(self._factor * 2, MAX_BACKOFF_FACTOR) if self._factor else 1
            self._open_until = time.monotonic() + self._backoff * self._factor

    def succeeded(self) -> None:
        if self._factor:
            with self._lock:
                self._factor = 0


_circuits: dict[str, Circuit] = {}
_circuits_lock = threading.Lock()


def circuit_for(location: str) -> Circuit:
    """The process's circuit for this Redis (Django builds a cache object per thread; they share it)."""
    with _circuits_lock:
        if location not in _circuits:
            _circuits[location] = Circuit(settings.MODELWORKS_CACHE_BACKOFF_MS / 1000)
        return _circuits[location]


def _guarded(name: str) -> Callable[..., Any]:
    call = getattr(RedisCacheClient, name)

    def guarded(self: ReusingRedisCacheClient, *args: Any, **kwargs: Any) -> Any:
        self.circuit.check()
        try:
            result = call(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError):
            self.circuit.failed()
            raise
        self.circuit.succeeded()
        return result

    guarded.__name__ = name
    return guarded


class ReusingRedisCacheClient(RedisCacheClient):
    def __init__(self, servers, *args, **kwargs) -> None:
        super().__init__(servers, *args, **kwargs)
        self._clients: dict[int, object] = {}
        self._clients_lock = threading.Lock()
        self.circuit = circuit_for(servers[0])

    def get_client(self, key=None, *, write: bool = False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            with self._clients_lock:
                client = self._clients.get(index)
                if client is None:
                    client = self._client(connection_pool=self._get_connection_pool(write))
                    self._clients[index] = client
        return client


GUARDED = ("add", "get", "set", "touch", "delete", "get_many", "has_key", "incr", "set_many", "delete_many", "clear")
for _name in GUARDED:
    setattr(ReusingRedisCacheClient, _name, _guarded(_name))


class PooledRedisCache(RedisCache):
    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._class = ReusingRedisCacheClient
