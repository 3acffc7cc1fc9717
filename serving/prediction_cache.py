"""Cached predictions per row, in two levels: this process's memory, then Redis (when REDIS_URL is set).

Keys name the version and its artifact's hash (`row_key`), so a recreated database or a re-uploaded artifact never
meets stale entries. Level 1 is an LRU bounded by bytes (MODELWORKS_PREDICTION_CACHE_LOCAL_MB), with each entry's
TTL; it answers a repeated row without leaving the process. Level 2 is Redis, shared by the processes and pods.

Why this shape: with one Redis round trip per request on the request processor's one thread (serving/front.py),
turning the cache on halved throughput at concurrency 64. So a request's steps ask their driver for the level-2
lookups (`lookup_steps` yields a `CacheLookup`), and the processor sends the lookups of one whole round to Redis as
one MGET; writes made during a round (`store`) go out together when the round ends (`round_writes`), sent by a
writer thread of their own as one command (a script of SET EX per key: a pipeline's packing costs three times the
CPU). While level 2 finds almost nothing (a workload that does not repeat), only one lookup in
MODELWORKS_PREDICTION_CACHE_PROBE_EVERY asks it (`Yield`), and only rows seen twice are written (`Admission`), so
it costs nearly nothing there.
Redis gets its own client with a short timeout (MODELWORKS_PREDICTION_CACHE_TIMEOUT_MS) and its own back-off
(config.cache.Circuit): a slow or absent Redis only turns level-2 hits into misses, never an error, and is skipped
for a moment after it fails. Values are JSON (exact for the floats, ints and strings models answer; NaN included):
no pickle, so whoever can write to Redis cannot make the web process run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.core.signals import setting_changed

from config.cache import CacheUnavailable, Circuit

logger = logging.getLogger(__name__)

ENTRY_OVERHEAD = 240  # bytes an entry costs beyond its key and encoded value: the dict slot, tuple, list, floats
FLOAT_ONLY = frozenset({float})
REDIS_BACKENDS = ("config.cache.PooledRedisCache", "django.core.cache.backends.redis.RedisCache")


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """A step of a request asking its driver for these keys' level-2 entries: the answer sent back is a dict of the
    hits (of these keys or more: the processor sends one round's), {} when Redis cannot answer."""

    keys: list[str]


def row_key(version_key: str, row: list[Any]) -> str:
    """`version_key` names the version and its artifact, so a recreated database never meets stale entries. A row
    of floats (as validation makes every numeric row) is hashed as its doubles' bytes, a tenth of the cost of its
    JSON text (which every other row is hashed as); the two forms are told apart by their first byte."""
    if set(map(type, row)) <= FLOAT_ONLY:
        canonical = b"f" + array("d", row).tobytes()
    else:
        canonical = b"j" + json.dumps(row, separators=(",", ":"), allow_nan=True).encode()
    return f"pred:{version_key}:{hashlib.blake2b(canonical, digest_size=16).hexdigest()}"


# ------------------------------------------------------------------------------------------------- level 1


class Admission:
    """Which computed answers are worth caching. While this process's lookups have found almost nothing lately (a
    moving average of the share of rows found, per lookup, under MIN_HITS: rows that do not repeat), an answer is
    cached only for a row seen once before, as TinyLFU's doorkeeper admits (a set of recently seen keys' hashes,
    emptied when it holds SEEN of them). Why: on such a workload every write (its JSON, level 1's entry, a Redis SET)
    was CPU spent for nothing, and made the cache cost more than it saved. A row that comes back is cached on its
    second sighting, and once lookups find rows again everything is admitted as before.

    No lock: sets' operations are atomic, and a lost update of the average only nudges it."""

    MIN_HITS = 0.02
    WEIGHT = 0.05  # of the newest lookup in the average: from 1.0, about 60 lookups finding nothing take it under 2%
    SEEN = 1 << 16

    def __init__(self) -> None:
        self.average = 1.0
        self._seen: set[int] = set()

    def record(self, asked: int, found: int) -> None:
        if asked:
            self.average += self.WEIGHT * (found / asked - self.average)

    def admit(self, keys: list[str]) -> list[str]:
        if self.average >= self.MIN_HITS:
            return keys
        admitted = []
        for key in keys:
            fingerprint = hash(key)
            if fingerprint in self._seen:
                self._seen.discard(fingerprint)
                admitted.append(key)
                continue
            if len(self._seen) >= self.SEEN:
                self._seen.clear()
            self._seen.add(fingerprint)
        return admitted


class LocalCache:
    """An LRU of encoded answers bounded by bytes (keys, values and a fixed overhead per entry), each with its TTL,
    and what this process admits to either level (Admission). Thread-safe: the processor thread and Django's request
    threads share it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[Any, float, int]] = OrderedDict()  # key -> (value, expires, size)
        self._lock = threading.Lock()
        self.admission = Admission()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        now = time.monotonic()
        found = {}
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None:
                    continue
                if entry[1] <= now:
                    self._drop(key)
                    continue
                self._entries.move_to_end(key)
                found[key] = _fresh_copy(entry[0])
        return found

    def set_many(self, entries: dict[str, tuple[Any, int]], ttl_seconds: float) -> None:
        """`entries`: key -> (value, its encoded size)."""
        expires = time.monotonic() + ttl_seconds
        with self._lock:
            for key, (value, encoded) in entries.items():
                size = len(key) + encoded + ENTRY_OVERHEAD
                if size > self.max_bytes:
                    continue
                if key in self._entries:
                    self._drop(key)
                self._entries[key] = (_frozen(value), expires, size)
                self.bytes += size
            while self.bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0
            self.admission = Admission()

    def _drop(self, key: str) -> None:
        self.bytes -= self._entries.pop(key)[2]


def _frozen(value: Any) -> Any:
    """What level 1 keeps: the answer as tuples, so that no response holding a hit can change the entry."""
    prediction, probabilities = value
    return prediction, None if probabilities is None else tuple(probabilities)


def _fresh_copy(value: Any) -> list[Any]:
    prediction, probabilities = value
    return [prediction, None if probabilities is None else list(probabilities)]


_local: LocalCache | None = None
_local_lock = threading.Lock()


def local() -> LocalCache:
    """This process's level 1."""
    global _local
    if _local is None:
        with _local_lock:
            if _local is None:
                _local = LocalCache(int(settings.MODELWORKS_PREDICTION_CACHE_LOCAL_MB * 1024 * 1024))
    return _local


# ------------------------------------------------------------------------------------------------- level 2


class Yield:
    """How much of what level 2 was asked it answered lately (a moving average per lookup), deciding whether a
    lookup asks it. Why: on a workload that does not repeat, every lookup is a round trip that finds nothing, and on
    the processor's one thread its wait is everyone's. So once level 2 has answered under MIN_YIELD of the keys asked
    over recent lookups, only one lookup in `probe_every` asks it, until a probe finds entries again."""

    MIN_YIELD = 0.02
    WEIGHT = 0.2  # of the newest lookup in the average: from 1.0, 18 lookups finding nothing take it under 2%

    def __init__(self, probe_every: int) -> None:
        self.probe_every = max(1, probe_every)
        self.average = 1.0
        self._skipped = 0
        self._lock = threading.Lock()

    def should_ask(self) -> bool:
        with self._lock:
            if self.average >= self.MIN_YIELD or self._skipped + 1 >= self.probe_every:
                self._skipped = 0
                return True
            self._skipped += 1
            return False

    def record(self, asked: int, found: int) -> None:
        with self._lock:
            self.average += self.WEIGHT * (found / asked - self.average)


class Writer:
    """Level-2 writes, sent by a thread of their own as one pipeline for whatever is queued: the request processor
    never waits for them. While Redis is slow the queue is capped (MAX_QUEUED batches): writes past it are dropped."""

    MAX_QUEUED = 10_000
    # After each pipeline the thread lets writes gather for this long: one wake-up and one round trip for the writes
    # of many rounds (at one request per round, a wake-up per round cost more CPU than the cache saved).
    LINGER_SECONDS = 0.01

    def __init__(self, target: Remote) -> None:
        self._target = target
        self._queue: queue.SimpleQueue[list[tuple[dict[str, bytes], int]] | threading.Event] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="prediction-cache-writer", daemon=True)
        self._thread.start()

    def put(self, writes: list[tuple[dict[str, bytes], int]]) -> None:
        if self._queue.qsize() < self.MAX_QUEUED:
            self._queue.put(writes)

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until what was queued before this call is written (or dropped): tests, shutdown."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            writes = [item for item in items if not isinstance(item, threading.Event)]
            try:
                if writes:
                    _guarded(self._target, lambda writes=writes: self._send(writes))
            except Exception:  # noqa: BLE001 - this thread must outlive any one write
                logger.warning("prediction cache: writing to Redis failed", exc_info=True)
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
            time.sleep(self.LINGER_SECONDS)

    def _send(self, batches: list[list[tuple[dict[str, bytes], int]]]) -> None:
        keys: list[str] = []
        values: list[bytes | int] = []
        for writes in batches:
            for entries, ttl in writes:
                for key, blob in entries.items():
                    keys.append(key)
                    values += (blob, max(int(ttl), 1))
        self._target.set_all(keys=keys, args=values)


# Every SET EX of a batch in one command: redis-py packs and parses a pipeline of N SETs at about 8 us of this
# process's CPU per key (no hiredis), this script's one call at about 2.6 us.
SET_ALL = "for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[2 * i - 1], 'EX', ARGV[2 * i]) end"


@dataclass
class Remote:
    client: redis.Redis
    circuit: Circuit
    yields: Yield
    writer: Writer | None = None
    set_all: Any = None  # SET_ALL, registered


_remote: Remote | None | bool = False  # False: not built yet; None: no Redis configured
_remote_lock = threading.Lock()


def remote() -> Remote | None:
    """The Redis behind the default cache (when it is Redis), with this cache's short timeouts and own back-off."""
    global _remote
    if _remote is False:
        with _remote_lock:
            if _remote is False:
                _remote = _build_remote()
    return _remote  # type: ignore[return-value]


def _build_remote() -> Remote | None:
    default = settings.CACHES.get("default", {})
    if default.get("BACKEND") not in REDIS_BACKENDS:
        return None
    location = default["LOCATION"]
    location = location[0] if isinstance(location, list | tuple) else location.split(",")[0]
    timeout = settings.MODELWORKS_PREDICTION_CACHE_TIMEOUT_MS / 1000
    client = redis.Redis.from_url(location, socket_timeout=timeout, socket_connect_timeout=timeout)
    target = Remote(client, Circuit(settings.MODELWORKS_CACHE_BACKOFF_MS / 1000),
                    Yield(settings.MODELWORKS_PREDICTION_CACHE_PROBE_EVERY))  # fmt: skip
    target.set_all = client.register_script(SET_ALL)
    target.writer = Writer(target)
    return target


def fetch(keys: list[str]) -> dict[str, Any]:
    """Level 2's entries for these keys in one MGET (copied into level 1); {} when Redis is away, slow, skipped, or
    has answered almost nothing lately (Yield)."""
    target = remote()
    if target is None or not keys or not target.yields.should_ask():
        return {}
    blobs = _guarded(target, lambda: target.client.mget(keys))
    if not blobs:
        return {}
    found, promoted = {}, {}
    for key, blob in zip(keys, blobs, strict=True):
        if blob is not None:
            try:
                found[key] = json.loads(blob)
            except ValueError:
                continue  # not ours: a miss
            promoted[key] = (found[key], len(blob))
    target.yields.record(len(keys), len(found))
    if promoted:
        local().set_many(promoted, settings.MODELWORKS_PREDICTION_CACHE_LOCAL_TTL_S)
    return found


def drain_writes(timeout: float = 5.0) -> bool:
    """Wait until the level-2 writes queued so far are sent (tests; a worker's shutdown)."""
    target = remote()
    return target is None or target.writer is None or target.writer.drain(timeout)


def _guarded(target: Remote, call: Any) -> Any:
    """`call()` unless Redis failed moments ago; None when it fails now (counted; the back-off starts)."""
    try:
        target.circuit.check()
    except CacheUnavailable:
        return None
    try:
        result = call()
    except (redis.ConnectionError, redis.TimeoutError):
        target.circuit.failed()
        return None
    except redis.RedisError:
        logger.warning("prediction cache: Redis refused a call", exc_info=True)
        return None
    target.circuit.succeeded()
    return result


def _write(writes: list[tuple[dict[str, bytes], int]]) -> None:
    target = remote()
    if target is not None and target.writer is not None and writes:
        target.writer.put(writes)


# --------------------------------------------------------------------------------------------- the two levels


def lookup_steps(keys: list[str]) -> Generator[CacheLookup, dict[str, Any], dict[str, Any]]:
    """The cached answers for these keys: level 1, then (as a step its driver answers) level 2 for the rest."""
    level_one = local()
    hits = level_one.get_many(keys)
    if len(hits) < len(keys) and remote() is not None:
        absent = [key for key in keys if key not in hits]
        found = yield CacheLookup(absent)
        for key in absent:
            if key in found:
                hits[key] = found[key]
    level_one.admission.record(len(keys), len(hits))
    return hits


def lookup(keys: list[str]) -> dict[str, Any]:
    """lookup_steps on this thread: both levels, one Redis round trip at most."""
    steps = lookup_steps(keys)
    try:
        step = next(steps)
        steps.send(fetch(step.keys))
    except StopIteration as finished:
        return finished.value
    raise RuntimeError("lookup_steps asked twice")  # pragma: no cover - it yields once at most


class _Round(threading.local):
    writes: list[tuple[dict[str, bytes], int]] | None = None


_round = _Round()


def store(entries: dict[str, Any], ttl_seconds: int) -> None:
    """Cache these answers in both levels. Level 2's writes are queued for the writer thread at once, or, inside
    `round_writes`, with the round's other writes when it ends (one pipeline). Only what Admission admits is
    cached. Never raises."""
    admitted = local().admission.admit(list(entries))
    if not admitted:
        return
    try:
        blobs = {key: json.dumps(entries[key], separators=(",", ":")).encode() for key in admitted}
    except (TypeError, ValueError):
        logger.warning("prediction cache: an answer is not JSON; not cached", exc_info=True)
        return
    local().set_many({key: (entries[key], len(blob)) for key, blob in blobs.items()}, ttl_seconds)
    if remote() is None:
        return
    if _round.writes is not None:
        _round.writes.append((blobs, ttl_seconds))
    else:
        _write([(blobs, ttl_seconds)])


@contextmanager
def round_writes() -> Iterator[None]:
    """Level-2 writes made on this thread inside the block go to the writer thread together at its end."""
    if _round.writes is not None:
        yield
        return
    _round.writes = []
    try:
        yield
    finally:
        writes, _round.writes = _round.writes, None
        _write(writes)


def level_sizes() -> tuple[int, int]:
    """(entries, bytes) held by level 1."""
    cache = local()
    return len(cache), cache.bytes


def _forget(setting: str, **kwargs: Any) -> None:
    global _remote, _local
    if setting in ("CACHES", "MODELWORKS_CACHE_BACKOFF_MS") or setting.startswith("MODELWORKS_PREDICTION_CACHE_"):
        with _remote_lock:
            _remote = False
    if setting.startswith("MODELWORKS_PREDICTION_CACHE") or setting == "CACHES":
        with _local_lock:
            _local = None


setting_changed.connect(_forget)
