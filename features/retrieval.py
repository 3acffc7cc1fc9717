"""Online reads: `get_online_features(entity_rows, ["view:feature", ...])`.

Per value, in order: a value given in the request (overrides), the online store when fresher than the view's TTL,
an on-demand function registered for the feature, the newest offline value within the TTL, else missing. The
answer is columnar (one list per feature, one entry per entity row), with where each value came from and its age.
All online values of a call come from one pipelined Redis round trip whatever the number of rows and views.
When Redis times out or is down the call goes on without it: every value takes the rest of the order (on-demand,
offline, missing) and `modelworks_feature_online_unavailable_total` counts the call.

On the request processor's thread (serving/front.py), which answers every prediction of the process, the database is
read on background threads (serving.routing.BackgroundReads), never inline: view definitions keep their last good
copy, which serves while a re-read fails or hangs (a view never read answers `FeaturesUnavailable`, a 503), and an
online (database store) or offline read is waited on for OFFLINE_WAIT_SECONDS at most: past it, or on a database
error, its values are missing (a required one is the caller's 400 naming it). Every thread treats a database error so,
and `modelworks_feature_database_unavailable_total` counts each read answered without the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from itertools import repeat
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection
from django.utils import timezone

from features import metrics
from features.models import FeatureValue, FeatureView
from features.on_demand import generation as on_demand_generation
from features.on_demand import on_demand_for
from features.online import VALUES_AT, DatabaseOnlineStore, OnlineStoreUnavailable, online_store, schema_id
from features.schema import dtype_problem, entity_key, entity_key_problem, parse_ref, to_us
from serving.routing import PROCESSOR_THREAD, BackgroundReads

log = logging.getLogger(__name__)
VIEW_CACHE_SECONDS = 5.0
VIEW_RETRY_SECONDS = 1.0  # after a failed read of the definitions, the last good copies serve this long unasked
COLD_WAIT_SECONDS = 2.0  # the processor's wait for definitions it has no copy of (then FeaturesUnavailable)
OFFLINE_WAIT_SECONDS = 0.2  # the processor's wait for an online (database store) or offline read


class FeaturesUnavailable(Exception):
    """The database did not answer and the definitions of a requested feature view are not in memory."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def _on_processor() -> bool:
    return threading.current_thread().name == PROCESSOR_THREAD


# Reads queued behind a hung one are refused at once, so a hung database costs the processor one wait, not one each.
_view_reads = BackgroundReads("feature-views", queue_behind_stuck=False)
# Values are read on every request by entity: the thread keeps its connection (a new one costs ~2.4 ms, a read ~0.1).
_value_reads = BackgroundReads("feature-values", queue_behind_stuck=False, close_when_idle=False)


@dataclass
class FeatureColumn:
    values: list[Any]
    sources: list[str]
    age_seconds: list[float | None]


@dataclass
class OnlineFeatures:
    features: dict[str, FeatureColumn] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "features": {
                ref: {"values": c.values, "sources": c.sources, "age_seconds": c.age_seconds}
                for ref, c in self.features.items()
            }
        }

    def row(self, index: int) -> dict[str, Any]:
        return {ref: column.values[index] for ref, column in self.features.items()}


class _ViewCache:
    """Definitions read at most every few seconds per process: a changed TTL or new feature shows up that late."""

    def __init__(self) -> None:
        self._views: dict[str, tuple[float, FeatureView]] = {}  # name -> (monotonic time of its read, view)
        self._resolved: dict[tuple, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._failed_at = float("-inf")

    def resolved(self, key: tuple, resolve: Any) -> Any:
        """`resolve()`, remembered under `key` as long as the views it read (a call asks the same refs every time)."""
        now = time.monotonic()
        hit = self._resolved.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = resolve()
        with self._lock:
            if len(self._resolved) > 10_000:
                self._resolved.clear()
            self._resolved[key] = (now + VIEW_CACHE_SECONDS, value)
        return value

    def get(self, names: set[str]) -> dict[str, FeatureView]:
        now = time.monotonic()
        found = {n: hit[1] for n in names if (hit := self._views.get(n)) and now - hit[0] < VIEW_CACHE_SECONDS}
        missing = names - found.keys()
        if missing:
            found.update(self._refresh(missing, now))
        return found

    def _refresh(self, names: set[str], now: float) -> dict[str, FeatureView]:
        """Re-read, or the last good copies while the database fails or hangs (up to the routes' staleness bound)."""
        limit = settings.MODELWORKS_ROUTE_MAX_STALE_SECONDS
        copies = {n: hit[1] for n in names if (hit := self._views.get(n)) and now - hit[0] <= limit}
        have_all = len(copies) == len(names)
        if have_all and now - self._failed_at < VIEW_RETRY_SECONDS:
            return copies
        try:
            if not _on_processor():
                return self._load(names)
            # With every copy in memory the processor does not wait: the read refreshes them for the next request.
            budget = 0.0 if have_all else COLD_WAIT_SECONDS
            return _view_reads.read(frozenset(names), lambda: self._load(names), budget, now=now)
        except (FutureTimeout, DatabaseError) as exc:
            reason = "timeout" if isinstance(exc, FutureTimeout) else "error"
            if not have_all:
                metrics.DATABASE_UNAVAILABLE.labels("views", reason).inc()
                raise FeaturesUnavailable(
                    "the database did not answer and these feature views are not in memory: "
                    + ", ".join(sorted(names - copies.keys()))
                ) from None
            if reason == "error":
                metrics.DATABASE_UNAVAILABLE.labels("views", reason).inc()
            return copies

    def _load(self, names: set[str]) -> dict[str, FeatureView]:
        try:
            loaded = {v.name: v for v in FeatureView.objects.select_related("entity").filter(name__in=names)}
        except DatabaseError:
            self._failed_at = time.monotonic()
            log.warning("feature views %s could not be read; serving the last good ones", sorted(names))
            raise
        read_at = time.monotonic()
        with self._lock:
            for name in names - loaded.keys():
                self._views.pop(name, None)  # deleted: its last copy must not serve on
            for name, view in loaded.items():
                self._views[name] = (read_at, view)
        return loaded

    def clear(self) -> None:
        with self._lock:
            self._views.clear()
            self._resolved.clear()


view_cache = _ViewCache()


def resolve_refs(refs: Any) -> list[tuple[str, FeatureView, str]]:
    """(ref, view, feature) per requested ref; ValidationError naming every bad one."""
    if not isinstance(refs, list) or not refs:
        raise ValidationError({"features": ["must be a non-empty list of 'view:feature' references"]})
    parsed = [(ref, parse_ref(ref)) for ref in refs]
    views = view_cache.get({p[0] for _, p in parsed if p})
    problems, resolved = [], []
    known = {name: set(view.feature_names) for name, view in views.items()}
    for ref, names in parsed:
        if names is None:
            problems.append(f"{ref!r} is not a reference like 'view:feature'")
        elif names[0] not in views:
            problems.append(f"{ref}: no feature view named '{names[0]}'")
        elif names[1] not in known[names[0]]:
            problems.append(f"{ref}: view '{names[0]}' has no feature '{names[1]}'")
        else:
            resolved.append((ref, views[names[0]], names[1]))
    if problems:
        raise ValidationError({"features": problems})
    if len({ref for ref, _, _ in resolved}) != len(resolved):
        raise ValidationError({"features": ["a feature is requested twice"]})
    return resolved


def _resolve(features: Any) -> tuple[list, list]:
    """The requested refs, and those plus the inputs of their on-demand functions."""

    def resolve() -> tuple[list, list]:
        requested = resolve_refs(features)
        return requested, requested + _on_demand_inputs(requested)

    if not isinstance(features, list) or not all(map(isinstance, features, repeat(str))):
        return resolve()
    return view_cache.resolved((tuple(features), on_demand_generation()), resolve)


def _on_demand_inputs(requested: list[tuple[str, FeatureView, str]]) -> list[tuple[str, FeatureView, str]]:
    """The inputs of on-demand functions for requested features that the caller did not ask for (transitively)."""
    have = {ref for ref, _, _ in requested}
    extra: list[str] = []
    todo = [ref for ref, _, _ in requested]
    while todo:
        on_demand = on_demand_for(todo.pop())
        for name in on_demand.inputs if on_demand else ():
            if name not in have:
                have.add(name)
                extra.append(name)
                todo.append(name)
    return resolve_refs(extra) if extra else []


def _entity_keys(view: FeatureView, entity_rows: list[dict[str, Any]]) -> list[str | None]:
    join_key, problems, keys = view.entity.join_key, [], []
    raws = [row.get(join_key) for row in entity_rows]
    if set(map(type, raws)) == {int}:  # the common case, valid for either key type
        return list(map(str, raws))
    for index, raw in enumerate(raws):
        if type(raw) is int:
            keys.append(str(raw))
        elif raw is None:
            keys.append(None)
        elif problem := entity_key_problem(view.entity, raw):
            problems.append(f"row {index}: {join_key} {problem}")
        else:
            keys.append(entity_key(raw))
    if problems:
        raise ValidationError({"entities": problems})
    return keys


def get_online_features(
    entity_rows: list[dict[str, Any]], features: list[str], *, overrides: list[dict[str, Any]] | None = None
) -> OnlineFeatures:
    """Feature values for each entity row ({join_key: id, ...}); `overrides[i]` may give values (by ref) directly."""
    started = time.perf_counter()
    if not isinstance(entity_rows, list) or not all(map(isinstance, entity_rows, repeat(dict))):
        raise ValidationError({"entities": ["must be a list of objects like {join_key: id}"]})
    requested, resolved = _resolve(features)
    if overrides is not None:
        _check_overrides(overrides, requested, len(entity_rows))
    now_us = to_us(timezone.now())
    views = {view.name: view for _, view, _ in resolved}
    keys = {name: _entity_keys(view, entity_rows) for name, view in views.items()}
    wanted = [(views[name], [k for k in keys[name] if k is not None]) for name in views]
    blocks = _read_online(wanted) if any(k for _, k in wanted) else [[] for _ in wanted]
    rows = {}
    for (view, found), block in zip(wanted, blocks, strict=True):
        if len(found) == len(entity_rows):
            rows[view.name] = block
        else:  # rows without this view's join key were not asked for
            answer = iter(block)
            rows[view.name] = [next(answer) if key is not None else None for key in keys[view.name]]
    result, pending, mixed = _columns(resolved, views, rows, now_us)
    if overrides:
        pending = _apply_overrides(result, overrides, pending, mixed)
    if pending:
        _fill_missing(result, pending, {ref: (view, feature) for ref, view, feature in resolved}, views, keys, now_us)
    for ref in {ref for ref, _, _ in resolved} - {ref for ref, _, _ in requested}:
        del result.features[ref]  # fetched only to feed an on-demand function
    _count(result, {ref: view.name for ref, view, _ in requested}, mixed | {ref for _, ref in pending})
    metrics.ONLINE_READ_SECONDS.observe(time.perf_counter() - started)
    return result


def _read_online(wanted: list[tuple[FeatureView, list[str]]]) -> list[list[list[Any] | None]]:
    """The online rows, or none at all while the online store is unavailable (a missing cache degrades a read,
    never fails it)."""
    store = online_store()
    nothing = [[None] * len(keys) for _, keys in wanted]
    if isinstance(store, DatabaseOnlineStore):
        key = ("online", tuple((view.pk, tuple(keys)) for view, keys in wanted))
        return _database_read("online", key, lambda: store.read_rows(wanted), nothing)
    try:
        return store.read_rows(wanted)
    except OnlineStoreUnavailable as exc:
        metrics.ONLINE_UNAVAILABLE.labels(exc.reason).inc()
        if exc.reason == "error":
            log.warning("online store unavailable (%s); reading offline", exc.__cause__ or exc)
        return nothing


def _database_read(read: str, key: Any, load: Any, nothing: Any) -> Any:
    """`load()`, or `nothing` when the database fails, or on the processor's thread does not answer within
    OFFLINE_WAIT_SECONDS (the read goes on in the background; its answer is dropped)."""
    try:
        if _on_processor():
            return _value_reads.read(key, load, OFFLINE_WAIT_SECONDS)
        return load()
    except (FutureTimeout, DatabaseError) as exc:
        reason = "timeout" if isinstance(exc, FutureTimeout) else "error"
        metrics.DATABASE_UNAVAILABLE.labels(read, reason).inc()
        log.warning("feature %s read answered without the database (%s)", read, reason)
        return nothing


def _columns(resolved, views, rows, now_us: int) -> tuple[OnlineFeatures, list[tuple[int, str]], set[str]]:
    """Online values fresher than their view's TTL, one column per ref. Rows are [event_us, created_us, schema,
    value_id, *values]; when every entity has a fresh row, zip() turns them into columns in C. This is the part of a
    call that runs per value, and the benchmark holds it against a bare Redis read."""
    result, pending, mixed = OnlineFeatures(), [], set()
    for name, view in views.items():
        oldest, schema = now_us - view.ttl_seconds * 1_000_000, schema_id(view)
        block = rows[name]
        columns = list(zip(*block, strict=True)) if block and None not in block else None
        if columns is None or min(columns[0]) < oldest or columns[2].count(schema) != len(block):
            block = [r if r is not None and r[0] >= oldest and r[2] == schema else None for r in block]
            columns = None
        events = columns[0] if columns else [None if r is None else r[0] for r in block]
        ages = [None if e is None else max(now_us - e, 0) / 1e6 for e in events]
        position = {feature: VALUES_AT + i for i, feature in enumerate(view.feature_names)}
        for ref, ref_view, feature in resolved:
            if ref_view.name != name:
                continue
            at = position[feature]
            values = list(columns[at]) if columns else [None if r is None else r[at] for r in block]
            if None not in values:
                result.features[ref] = FeatureColumn(values, ["online"] * len(values), list(ages))
                continue
            sources = ["missing" if v is None else "online" for v in values]
            age = [None if v is None else a for v, a in zip(values, ages, strict=True)]
            result.features[ref] = FeatureColumn(values, sources, age)
            pending += [(index, ref) for index, v in enumerate(values) if v is None]
            mixed.add(ref)
    result.features = {ref: result.features[ref] for ref, _, _ in resolved}  # the caller's order
    return result, pending, mixed


def _check_overrides(overrides: Any, requested, row_count: int) -> None:
    """One object per entity row, each giving requested refs values of the feature's type."""
    if not isinstance(overrides, list) or len(overrides) != row_count:
        raise ValidationError({"overrides": ["give one object per entity row"]})
    dtypes = {ref: view.dtypes[feature] for ref, view, feature in requested}
    problems = []
    for index, given in enumerate(overrides):
        if not isinstance(given, dict):
            problems.append(f"row {index}: must be an object of 'view:feature': value")
            continue
        for ref, value in given.items():
            if ref not in dtypes:
                problems.append(f"row {index}: {ref} is not one of the requested features")
            elif value is None:
                problems.append(f"row {index}: {ref}: give a value or leave it out")
            elif problem := dtype_problem(dtypes[ref], value):
                problems.append(f"row {index}: {ref} {problem}")
    if problems:
        raise ValidationError({"overrides": problems[:20]})


def _apply_overrides(result: OnlineFeatures, overrides, pending, mixed: set[str]) -> list[tuple[int, str]]:
    """Values the request gives win over everything else; answers what is still to be found."""
    for index, given in enumerate(overrides):
        for ref, value in (given or {}).items():
            column = result.features.get(ref)
            if column is not None:
                column.values[index], column.sources[index], column.age_seconds[index] = value, "request", 0.0
                mixed.add(ref)
    return [(i, ref) for i, ref in pending if not (overrides[i] and ref in overrides[i])]


def _fill_missing(result: OnlineFeatures, pending, refs, views, keys, now_us: int) -> None:
    """On-demand functions first (repeated while they make progress, so one may feed another), then offline. A value
    with an on-demand function is computed from offline inputs too (with the online store away, all its inputs come
    from there) before its own offline value is taken."""
    pending = _compute_while_progress(result, pending, refs)
    by_view: dict[str, set[str]] = {}
    for index, ref in pending:
        key = keys[refs[ref][0].name][index]
        if key is not None:
            by_view.setdefault(refs[ref][0].name, set()).add(key)
    latest = {name: _database_read("offline", ("offline", views[name].pk, frozenset(found)),
                                   partial(_offline_latest, views[name], found), {})
              for name, found in by_view.items()}  # fmt: skip
    deferred = [(index, ref) for index, ref in pending if on_demand_for(ref) is not None]
    for index, ref in pending:
        if on_demand_for(ref) is None:
            _offline_fill(result, index, ref, refs, keys, latest, now_us)
    for index, ref in _compute_while_progress(result, deferred, refs) if deferred else ():
        _offline_fill(result, index, ref, refs, keys, latest, now_us)


def _compute_while_progress(result: OnlineFeatures, pending, refs) -> list[tuple[int, str]]:
    """What is still missing after running on-demand functions until none makes progress."""
    progress = True
    while pending and progress:
        progress, still = False, []
        for index, ref in pending:
            if _compute(result, index, ref, refs[ref][0]):
                progress = True
            else:
                still.append((index, ref))
        pending = still
    return pending


def _offline_fill(result: OnlineFeatures, index: int, ref: str, refs, keys, latest, now_us: int) -> None:
    view, feature = refs[ref]
    record = latest.get(view.name, {}).get(keys[view.name][index])
    if record is not None and record[1].get(feature) is not None:
        column = result.features[ref]
        column.values[index] = record[1].get(feature)
        column.sources[index] = "offline"
        column.age_seconds[index] = max(now_us - record[0], 0) / 1e6


def _compute(result: OnlineFeatures, index: int, ref: str, view: FeatureView) -> bool:
    on_demand = on_demand_for(ref)
    if on_demand is None:
        return False
    inputs, ages = {}, []
    for name in on_demand.inputs:
        column = result.features.get(name)
        if column is None or column.sources[index] == "missing" or column.values[index] is None:
            return False
        inputs[name] = column.values[index]
        ages.append(column.age_seconds[index] or 0.0)
    try:
        value = on_demand.function(inputs)
    except Exception:
        log.exception("on-demand feature %s failed; falling back to the offline store", ref)
        return False
    if value is None or dtype_problem(view.dtypes[ref.split(":", 1)[1]], value):
        return False
    column = result.features[ref]
    column.values[index], column.sources[index], column.age_seconds[index] = value, "on_demand", max(ages, default=0.0)
    return True


def _offline_latest(view: FeatureView, keys: set[str]) -> dict[str, tuple[int, dict[str, Any]]]:
    """The newest value per entity with an event time in [now - TTL, now]: one indexed query."""
    now = timezone.now()
    rows = FeatureValue.objects.filter(
        view=view, entity_key__in=keys, event_ts__lte=now, event_ts__gte=now - timedelta(seconds=view.ttl_seconds)
    ).order_by("entity_key", "-event_ts", "-created_ts", "-id")
    if connection.features.can_distinct_on_fields:
        rows = rows.distinct("entity_key")
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for key, event_ts, data in rows.values_list("entity_key", "event_ts", "data"):
        latest.setdefault(key, (to_us(event_ts), data))
    return latest


def _count(result: OnlineFeatures, view_of: dict[str, str], mixed: set[str]) -> None:
    counts: Counter[tuple[str, str]] = Counter()
    for ref, column in result.features.items():
        if ref in mixed:
            counts.update((view_of[ref], source) for source in column.sources)
        else:
            counts[(view_of[ref], "online")] += len(column.sources)
    for (view, source), count in counts.items():
        metrics.FEATURE_VALUES.labels(view, source).inc(count)
