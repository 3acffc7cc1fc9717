"""Which version serves a request: the one place rollouts and experiments plug into.

An explicit `?version=N` pin or `?alias=NAME` is served as asked. Otherwise the model's production traffic goes to the
`production` alias, unless a rollout or an experiment splits it (serving/traffic.py): then the request's arm decides.

By status: the routes the server chooses (production, an alias, a split's arm, a fallback) only ever serve
`ModelVersion.routable` versions. An explicit pin may reach an archived or rolled-back version (reason "pinned");
a rejected or tampered version is refused even to a pin (409). One exception, for the breaker: a production version
with no split falls back to the version production pointed at before it even when that one is archived (never a
rolled-back, rejected or tampered one).
Lookups are cached in the process for MODELWORKS_ROUTE_TTL_MS (default 500 ms), so when an alias moves or a split
changes every process follows within a second, while the hot path does not query the database on every request.

When the database is away the last good routes keep serving, for at most MODELWORKS_ROUTE_MAX_STALE_SECONDS
(`staleness_seconds()` says how old the oldest one served is, as does modelworks_route_staleness_seconds); a request
with nothing to serve from answers 503 (`RouteUnavailable`). On the request processor's thread (serving/front.py),
which answers every prediction of the process, routes are read from the database on a background thread: it waits
MODELWORKS_ROUTE_WAIT_MS at most for a read and serves the last good route past that, so a hung database costs it
that once instead of the whole hang. Other threads (Django's, one request each) read inline, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections, transaction

from registry.models import ModelAlias, ModelVersion, RegisteredModel, VersionStatus
from registry.selectors import previous_production
from registry.services import PRODUCTION_ALIAS
from serving import metrics, traffic
from serving.models import RouteReason
from serving.per_process import PerProcess

logger = logging.getLogger(__name__)

PRODUCTION_REASON = RouteReason.alias(PRODUCTION_ALIAS)


class RouteError(Exception):
    def __init__(self, status: int, message: str, *, unknown_model: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.unknown_model = unknown_model  # no such model: its name is the caller's, not a metric label


class RouteUnavailable(RouteError):
    """The database did not answer and no route to serve from is in memory (or the last one is too old)."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(503, message)
        self.retry_after = retry_after


@dataclass(slots=True)
class Route:
    version: ModelVersion
    reason: str  # why this version (serving.models.RouteReason): "pinned", "alias:production", "rollout:7:candidate"
    split: traffic.Split | None = None
    arm: traffic.Arm | None = None
    # Set when the split's arm chose a version that may not have traffic (archived, rolled back, rejected, tampered):
    # why. The request is then answered by the split's fallback (serving/services.py), logged against this arm.
    refused: str | None = None

    @property
    def pinned(self) -> bool:
        return self.reason == RouteReason.PINNED


@dataclass(slots=True)
class _Entry:
    value: Any
    loaded_at: float  # monotonic time of the database read it came from
    failed_at: float | None = None  # when its last refresh failed; None while the database answers


PROCESSOR_THREAD = "request-processor"  # serving/front.py's thread, which must never wait on the database
COLD_WAIT_SECONDS = 2.0  # a route never read before has nothing to fall back on: the processor waits longer for it
# On the processor's thread a route in use is re-read in the background once this share of its TTL is gone, so it is
# renewed before it ages out: waiting for the read when it had aged out (every TTL, each read a new connection and
# a snapshot on a database the log's COPY keeps busy) stalled the whole round, and was most of the p99 at c=8
# (docs/performance.md, issue 18). What a request is routed by is still never older than the TTL.
REFRESH_AHEAD = 0.5

# Routes a process remembers. Callers can name any version or alias (each answer, a 404 included, is an entry), so
# the cache is bounded: past the bound the oldest quarter is forgotten (read again when asked for).
ROUTE_CACHE_MAX = 4096
_cache: dict[tuple, _Entry] = {}
_lock = threading.Lock()
_refreshing: set[tuple] = set()  # inline reads in progress
_known_models: set[str] = set()
_last_read = 0.0  # when a read last succeeded: entries that failed before it are not stale, only not asked for since
_reported_staleness = 0.0


def _cached(key: tuple, load):
    """The cached value while fresh. When it ages out, one thread reloads it while the others keep using the old
    value for those few milliseconds, so a busy process never sends a burst of identical queries. When the reload
    fails (or hangs), the last good value serves, up to MODELWORKS_ROUTE_MAX_STALE_SECONDS old."""
    now = time.monotonic()
    entry = _cache.get(key)
    ttl = settings.MODELWORKS_ROUTE_TTL_MS / 1000
    if entry is not None and (now - entry.loaded_at < ttl):
        if (
            now - entry.loaded_at > ttl * REFRESH_AHEAD
            and entry.failed_at is None  # after a failed re-read, the aged-out path decides when to ask again
            and threading.current_thread().name == PROCESSOR_THREAD
        ):
            _reads.start(key, lambda: _read(key, load), settings.MODELWORKS_ROUTE_WAIT_MS / 1000, now=now)
        return entry.value
    if entry is not None and entry.failed_at is not None and now - entry.failed_at < ttl:
        return _stale(entry, now)  # the database failed moments ago: ask it again only after a TTL
    if threading.current_thread().name == PROCESSOR_THREAD:
        return _read_in_background(key, load, entry, now)
    with _lock:
        refreshing = entry is not None and key in _refreshing
        if not refreshing:
            _refreshing.add(key)
    if refreshing:
        return _stale(entry, now)
    try:
        return _read(key, load)
    except DatabaseError:
        if entry is None:
            raise RouteUnavailable("the database did not answer and this route is not in memory") from None
        return _stale(entry, now)
    finally:
        with _lock:
            _refreshing.discard(key)


def _read(key: tuple, load):
    """Read from the database and remember it (or remember that the read failed)."""
    try:
        value = load()
    except DatabaseError:
        logger.warning("route %s could not be read; serving the last good one", key, exc_info=True)
        with _lock:
            entry = _cache.get(key)
            if entry is not None:
                entry.failed_at = time.monotonic()
        _report_staleness()
        raise
    global _last_read
    with _lock:
        _last_read = time.monotonic()
        _cache[key] = _Entry(value, _last_read)
        if len(_cache) > ROUTE_CACHE_MAX:
            _forget_oldest()
        found = value.production if isinstance(value, _Default) else value
        if key[0] in ("version", "alias", "default") and not (isinstance(found, RouteError) and found.unknown_model):
            _known_models.add(key[1])
    _report_staleness()
    return value


def _forget_oldest() -> None:
    """Drop the least recently read quarter of the cache (the caller holds _lock)."""
    for key in sorted(_cache, key=lambda k: _cache[k].loaded_at)[: len(_cache) // 4]:
        del _cache[key]


def _read_in_background(key: tuple, load, entry: _Entry | None, now: float):
    budget = COLD_WAIT_SECONDS if entry is None else settings.MODELWORKS_ROUTE_WAIT_MS / 1000
    try:
        return _reads.read(key, lambda: _read(key, load), budget, now=now)
    except (FutureTimeout, DatabaseError):
        if entry is None:
            raise RouteUnavailable("the database did not answer and this route is not in memory") from None
        return _stale(entry, now)


class BackgroundReads:
    """Database reads for the request processor's thread (which must never wait on the database), run on one
    background thread of their own: the caller waits at most `budget` seconds for its read, and only what is left of
    that budget when the same read (same key) is already on its way, so a hung database costs the processor that
    once instead of the whole hang. Past the budget `read` raises concurrent.futures.TimeoutError (the read goes on,
    and what it stores serves the next request); a failed read raises what it raised.

    `queue_behind_stuck=False`: while a read has been running for longer than its caller's budget (the database
    hangs), other reads are not queued behind it but refused at once (TimeoutError), so a round of requests with
    different keys costs the processor one budget, not one each.

    `close_when_idle=False`: the thread keeps its connection between reads (closed only after a failure), for reads
    made on every request, which would otherwise pay a new connection each."""

    def __init__(self, thread_name: str, *, queue_behind_stuck: bool = True, close_when_idle: bool = True) -> None:
        self._executor = PerProcess(lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name))
        self._queue_behind_stuck = queue_behind_stuck
        self._close_when_idle = close_when_idle
        self._lock = threading.Lock()
        self._reading: dict[Any, tuple[float, Future]] = {}  # reads in progress, with when they started

    def read(self, key: Any, load, budget: float, *, now: float | None = None):
        now = time.monotonic() if now is None else now
        future, started = self.start(key, load, budget, now=now)
        if future is None:
            raise FutureTimeout(f"a database read has been running for longer than {budget:.2f} s")
        return future.result(timeout=max(0.0, started + budget - now))

    def start(self, key: Any, load, budget: float, *, now: float | None = None) -> tuple[Future | None, float]:
        """Start the read unless it is on its way (then join it); no future when reads are stuck (see above)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            started, future = self._reading.get(key, (now, None))
            if future is None:
                if not self._queue_behind_stuck and any(now - t > budget for t, _ in self._reading.values()):
                    return None, now
                future = self._executor().submit(self._run, key, load)
                self._reading[key] = (started, future)
        return future, started

    def close_connections(self, timeout: float = 5.0) -> None:
        """Close the thread's database connections, on that thread (tests' teardown, for `close_when_idle=False`)."""
        self._executor().submit(connections.close_all).result(timeout)

    def running_since(self, moment: float) -> set:
        """The keys of reads that started before `moment` and have not finished."""
        with self._lock:
            return {key for key, (started, _) in self._reading.items() if started < moment}

    def _run(self, key: Any, load):
        failed = True
        try:
            value = load()
            failed = False
            return value
        finally:
            with self._lock:
                self._reading.pop(key, None)
                idle = not self._reading
            # No request cycle closes this thread's connection: it is closed after a failure, so a broken or hung
            # one is never reused (the next read's connect is bounded by connect_timeout), and when no read is
            # queued behind this one, so an idle process holds no connection for these reads.
            if failed or (idle and self._close_when_idle):
                connections.close_all()


# One thread: every read goes to the same database. While a read hangs, the others are not queued behind it: they
# serve their last good route at once, and a route never read (callers may name any alias or version) answers 503
# at once instead of costing the processor COLD_WAIT_SECONDS each.
_reads = BackgroundReads("route-refresh", queue_behind_stuck=False)


def _stale(entry: _Entry, now: float):
    age = now - entry.loaded_at
    limit = settings.MODELWORKS_ROUTE_MAX_STALE_SECONDS
    _report_staleness()
    if age > limit:
        raise RouteUnavailable(f"the database has not answered for {age:.0f} s; routes older than {limit} s are "
                               "not served")  # fmt: skip
    return entry.value


def staleness_seconds() -> float:
    """How old the oldest route is that serves from memory because the database did not answer (0: all fresh)."""
    now = time.monotonic()
    wait = settings.MODELWORKS_ROUTE_WAIT_MS / 1000
    stuck = _reads.running_since(now - wait)
    with _lock:
        ages = [now - entry.loaded_at for key, entry in _cache.items()
                if (entry.failed_at is not None and entry.failed_at > _last_read) or key in stuck]  # fmt: skip
    return max(ages, default=0.0)


def max_stale_seconds() -> float:
    return float(settings.MODELWORKS_ROUTE_MAX_STALE_SECONDS)


def routes_in_memory() -> int:
    """How many routes this process could still serve without the database (younger than the staleness bound)."""
    now = time.monotonic()
    with _lock:
        return sum(now - entry.loaded_at <= settings.MODELWORKS_ROUTE_MAX_STALE_SECONDS for entry in _cache.values())


def _report_staleness() -> None:
    global _reported_staleness
    staleness = staleness_seconds()
    if staleness != _reported_staleness:
        _reported_staleness = staleness
        metrics.ROUTE_STALENESS.set(staleness)


def is_known_model(model_name: str) -> bool:
    """This process has routed the model (so its name is a bounded metric label, not whatever a caller sent)."""
    return model_name in _known_models


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def registered_model_names(limit: int) -> tuple[str, ...]:
    """The names of the first `limit` registered models (by name), read and cached as routes are: how MLflow's
    `POST /invocations` finds a deployment's only model (serving/mlflow.py) without a query per request."""
    names = RegisteredModel.objects.order_by("name").values_list("name", flat=True)
    return _cached(("models", limit), lambda: tuple(names[:limit]))


def versions_for_serving():
    return ModelVersion.objects.select_related("model", "model__serving_policy")


def _load_alias(model_name: str, alias: str) -> ModelVersion | RouteError:
    found = ModelAlias.objects.filter(model__name=model_name, name=alias).values_list("version_id", flat=True).first()
    if found is None:
        if not RegisteredModel.objects.filter(name=model_name).exists():
            return RouteError(404, f"no model named '{model_name}'", unknown_model=True)
        return RouteError(404, f"{model_name} has no alias '{alias}'")
    return versions_for_serving().get(pk=found)


def _load_pinned(model_name: str, number: int) -> ModelVersion | RouteError:
    version = versions_for_serving().filter(model__name=model_name, version=number).first()
    if version is None:
        if not RegisteredModel.objects.filter(name=model_name).exists():
            return RouteError(404, f"no model named '{model_name}'", unknown_model=True)
        return RouteError(404, f"{model_name} has no version {number}")
    return version


def _load_by_id(version_id: int) -> ModelVersion | RouteError:
    found = versions_for_serving().filter(pk=version_id).first()
    return found if found is not None else RouteError(404, f"version id {version_id} no longer exists")


def version_by_id(version_id: int) -> ModelVersion:
    found = _cached(("id", version_id), lambda: _load_by_id(version_id))
    if isinstance(found, RouteError):
        raise found
    return found


@dataclass(frozen=True)
class _Default:
    """A model's default route, cached as one entry: production, and the split with each arm's version resolved.
    Each version comes with why the router may not give it traffic (None: routable), worked out once per read."""

    production: ModelVersion | RouteError
    refusal: str | None = None
    split: traffic.Split | None = None
    arms: dict[str, tuple[ModelVersion | RouteError, str, str | None]] | None = (
        None  # name -> (version, reason, refusal)
    )


def _refusal_of(found: ModelVersion | RouteError) -> str | None:
    return None if isinstance(found, RouteError) or found.routable else _refusal(found)


def _load_default(model_name: str) -> _Default:
    """Production and the split, read in one snapshot: a promotion commits the alias move and the rollout's end
    together, and reading them in two statements could see the old production and no split (a key on the candidate
    sent back to the baseline for one route refresh)."""
    with _snapshot():
        return _load_default_in_snapshot(model_name)


@contextmanager
def _snapshot():
    """A read-only transaction whose statements all see the same committed state (REPEATABLE READ on Postgres; a
    SQLite transaction reads one snapshot already). Inside a caller's transaction, that transaction's view."""
    connection = transaction.get_connection()
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _load_default_in_snapshot(model_name: str) -> _Default:
    production = _load_alias(model_name, PRODUCTION_ALIAS)
    if isinstance(production, RouteError):
        return _Default(production)
    split = traffic.active_split(production.model_id)
    if split is None:
        return _Default(production, _refusal_of(production))
    arms = {}
    for arm in split.arms:
        found = _load_by_id(arm.version_id)
        arms[arm.name] = (found, RouteReason.arm(split.owner, arm.name), _refusal_of(found))
    return _Default(production, _refusal_of(production), split, arms)


def resolve(
    model_name: str, *, version: int | None = None, alias: str | None = None, key: str | None = None,
    record: bool = True,
) -> Route:  # fmt: skip
    """The version that serves this request, and why. `key` (user or entity id) keeps a caller on one arm of a split.

    `record=False` for a lookup that serves no prediction (V2 model metadata and readiness): the split's `on_route`
    (an experiment's exposure) is not told of it."""
    if version is not None:
        found = _cached(("version", model_name, version), lambda: _load_pinned(model_name, version))
        if isinstance(found, RouteError):
            raise found
        if not found.servable:
            raise RouteError(409, _refusal(found))
        return Route(found, RouteReason.PINNED)
    if alias is not None:
        found = _cached(("alias", model_name, alias), lambda: _load_alias(model_name, alias))
        reason = RouteReason.alias(alias)
    else:
        default = _cached(("default", model_name), lambda: _load_default(model_name))
        split = default.split
        if split is not None:
            arm = split.arm_for(key)
            found, reason, refusal = default.arms[arm.name]
            if record and split.on_route is not None:
                split.on_route(arm, key)
            if isinstance(found, RouteError):
                raise found
            return Route(found, reason, split, arm, refusal)
        found = default.production
        if isinstance(found, RouteError):
            raise found
        if default.refusal is not None:
            raise RouteError(409, default.refusal)
        return Route(found, PRODUCTION_REASON)
    if isinstance(found, RouteError):
        raise found
    if not found.routable:
        raise RouteError(409, _refusal(found))
    return Route(found, reason)


def _refusal(version: ModelVersion) -> str:
    """Why the router gives this version no traffic of its own accord (or, rejected or tampered, none at all)."""
    if version.integrity_failed_at is not None:
        return f"{version} is tampered (its artifact failed the integrity check) and cannot be served"
    if version.servable:  # archived or rolled back: out of traffic, but a pin reaches it
        return f"{version} is {version.status} and out of traffic (pin ?version={version.version} to reach it)"
    return f"{version} is {version.status} and cannot be served"


def fallback_for(route: Route) -> ModelVersion | None:
    """Who answers when the routed version fails (the breaker's fallback, or a version that cannot load): for a
    split's other arms its first arm (a rollout's baseline, an experiment's control), if routable; otherwise the
    version production pointed at before this one: routable, or for a route with no split also archived (the
    documented exception: the previous production version, never a rolled-back, rejected or tampered one)."""
    version = route.version
    if route.split is not None and route.arm is not route.split.arms[0]:
        control_id = route.split.arms[0].version_id
        try:
            found = _cached(("id", control_id), lambda: _load_by_id(control_id))
        except RouteUnavailable:
            return None
        return None if isinstance(found, RouteError) or not found.routable else found
    archived_ok = route.split is None

    def load():
        previous = previous_production(version)
        if previous is None or not previous.servable or previous.status == VersionStatus.ROLLED_BACK:
            return None
        return previous if archived_ok or previous.routable else None

    try:
        return _cached(("fallback", version.pk, archived_ok), load)
    except RouteUnavailable:
        return None  # the database is away and this fallback was never read: none to offer now
