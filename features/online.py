"""The online store: the latest value per (view, entity), with its event and created time.

Two implementations behind one interface:
- RedisOnlineStore (REDIS_URL set): one Redis hash per view, field = entity key, value = a JSON array (below).
  A read is one pipelined round trip (one HMGET per view) whatever the number of entities; a write is a Lua script
  that replaces a value only when it is newer, so concurrent pushes and materialization runs can never move a value
  back in time, and rewriting what is already there writes nothing.
- DatabaseOnlineStore (the embedded default, no Redis): the same rule as one INSERT .. ON CONFLICT DO UPDATE .. WHERE
  in the `features_onlinevalue` table, which every process of `make run` (web, worker, beat) shares.

Redis is an optimisation here: a read that times out or cannot connect raises OnlineStoreUnavailable, and the caller
answers from on-demand functions and the offline store instead (features/retrieval.py). After such a failure reads
skip Redis at once for config/cache.py's back-off (the same circuit as the Django cache: one Redis).

"Newer" means a later event time, then a later created time, then written later (a higher offline row id): the same
order as every offline read, so online and offline answers agree whatever order values arrive in.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from config.cache import CacheUnavailable, circuit_for
from features.models import FeatureView, OnlineValue
from serving.per_process import PerProcess

WRITE_CHUNK = 1000
VALUES_AT = 4  # a stored row is [event_us, created_us, schema_id, value_id, *values]


class OnlineRecord(NamedTuple):  # a tuple: built once per entity per read, so it must be cheap
    event_us: int
    created_us: int
    data: dict[str, Any]
    value_id: int = 0  # the offline row's id: its write order, the last tie-break


class OnlineStoreUnavailable(Exception):
    """The online store could not be read (Redis hung, down, or skipped within the back-off after a failure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "error": this read failed; "skipped": not tried, a recent one failed


class OnlineStore(Protocol):
    def write(self, view: FeatureView, records: dict[str, OnlineRecord]) -> int: ...
    def read(self, wanted: list[tuple[FeatureView, list[str]]]) -> list[list[OnlineRecord | None]]: ...
    def read_rows(self, wanted: list[tuple[FeatureView, list[str]]]) -> list[list[list[Any] | None]]: ...
    def count(self, view: FeatureView) -> int: ...
    def drop(self, view: FeatureView) -> None: ...
    def delete(self, view: FeatureView, keys: list[str]) -> int: ...


# Values are [event_us, created_us, schema_id, value_id, ...]. Under the same schema id (so the same format) the
# later (event, created, value id) wins; a value written under another feature list, or by a version that kept no
# value id, is replaced by a later or equal (event, created).
_WRITE_IF_NEWER = """
local written = 0
for i = 1, #ARGV, 2 do
  local new = ARGV[i + 1]
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local replace = true
  if old then
    local oe, oc, of = string.match(old, '^%[(%-?%d+),(%-?%d+),(%-?%d+)')
    local ne, nc, nf, ni = string.match(new, '^%[(%-?%d+),(%-?%d+),(%-?%d+),(%-?%d+)')
    oe, oc, ne, nc = tonumber(oe), tonumber(oc), tonumber(ne), tonumber(nc)
    if not oe then
      replace = true
    elseif nf ~= of then
      replace = ne > oe or (ne == oe and nc >= oc)
    else
      local oi = tonumber(string.match(old, '^%[%-?%d+,%-?%d+,%-?%d+,(%-?%d+)'))
      ni = tonumber(ni)
      replace = ne > oe or (ne == oe and (nc > oc or (nc == oc and ni > oi)))
    end
  end
  if replace then
    redis.call('HSET', KEYS[1], ARGV[i], new)
    written = written + 1
  end
end
return written
"""


def redis_key(view: FeatureView) -> str:
    # By id, not name: a view deleted and made again under the same name starts empty.
    return f"mw:features:v{view.pk}"


def schema_id(view: FeatureView) -> int:
    """Identifies the view's feature list: values are stored by position, so a row written under another list of
    features must not be read by position (it reads as absent online; the offline store still has it by name)."""
    return _schema_id(tuple(view.feature_names))


@lru_cache(maxsize=1024)
def _schema_id(names: tuple[str, ...]) -> int:
    # "v2": the layout with the value id; values of the layout before it (no value id) read as another schema.
    return zlib.crc32(("v2\x1e" + "\x1f".join(names)).encode())


def to_record(view: FeatureView, row: list[Any] | None) -> OnlineRecord | None:
    if row is None or row[2] != schema_id(view):
        return None
    return OnlineRecord(row[0], row[1], dict(zip(view.feature_names, row[VALUES_AT:], strict=True)), row[3])


class RedisOnlineStore:
    """Values are stored as the JSON array [event_us, created_us, schema_id, value_id, value per feature in view order]:
    decoding an array is cheaper than an object, and rows of arrays turn into columns with one zip()."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, **settings.REDIS_CLIENT_OPTIONS)  # on the request path: bounded
        self._write_script = self.client.register_script(_WRITE_IF_NEWER)
        self._circuit = circuit_for(url)
        self._failures = (redis.ConnectionError, redis.TimeoutError)

    def write(self, view: FeatureView, records: dict[str, OnlineRecord]) -> int:
        items = list(records.items())
        names, schema = view.feature_names, schema_id(view)
        written = 0
        for start in range(0, len(items), WRITE_CHUNK):
            args: list[Any] = []
            for key, r in items[start : start + WRITE_CHUNK]:
                row = [r.event_us, r.created_us, schema, r.value_id, *[r.data.get(n) for n in names]]
                args += [key, orjson.dumps(row)]
            written += int(self._write_script(keys=[redis_key(view)], args=args))
        return written

    def read_rows(self, wanted: list[tuple[FeatureView, list[str]]]) -> list[list[list[Any] | None]]:
        """Per view, per key: [event_us, created_us, schema_id, value_id, *values] or None; one pipelined round trip.
        A row whose schema_id is not the view's current one was written under another feature list.
        OnlineStoreUnavailable when Redis fails (or failed within the back-off)."""
        try:
            self._circuit.check()
        except CacheUnavailable:
            raise OnlineStoreUnavailable("skipped") from None
        pipe = self.client.pipeline(transaction=False)
        for view, keys in wanted:
            pipe.hmget(redis_key(view), keys)
        try:
            answers = pipe.execute()
        except self._failures as exc:
            self._circuit.failed()
            raise OnlineStoreUnavailable("error") from exc
        self._circuit.succeeded()
        return [list(map(orjson.loads, raws)) if None not in raws else [r and orjson.loads(r) for r in raws]
                for raws in answers]  # fmt: skip

    def read(self, wanted: list[tuple[FeatureView, list[str]]]) -> list[list[OnlineRecord | None]]:
        rows = self.read_rows(wanted)
        return [[to_record(view, row) for row in block] for (view, _), block in zip(wanted, rows, strict=True)]

    def count(self, view: FeatureView) -> int:
        return int(self.client.hlen(redis_key(view)))

    def drop(self, view: FeatureView) -> None:
        self.client.delete(redis_key(view))

    def delete(self, view: FeatureView, keys: list[str]) -> int:
        """Remove these entities' values (subject erasure); how many there were."""
        return int(self.client.hdel(redis_key(view), *keys)) if keys else 0


class DatabaseOnlineStore:
    def write(self, view: FeatureView, records: dict[str, OnlineRecord]) -> int:
        table = connection.ops.quote_name(OnlineValue._meta.db_table)
        items = list(records.items())
        written = 0
        with transaction.atomic(), connection.cursor() as cursor:
            for start in range(0, len(items), WRITE_CHUNK):
                chunk = items[start : start + WRITE_CHUNK]
                params: list[Any] = []
                for key, record in chunk:
                    params += [
                        view.pk,
                        key,
                        record.event_us,
                        record.created_us,
                        record.value_id,
                        json.dumps(record.data),
                    ]
                cursor.execute(
                    f"INSERT INTO {table} (view_id, entity_key, event_us, created_us, value_id, data) "  # noqa: S608 (our table)
                    f"VALUES {', '.join(['(%s, %s, %s, %s, %s, %s)'] * len(chunk))} "
                    "ON CONFLICT (view_id, entity_key) DO UPDATE SET event_us = excluded.event_us, "
                    "created_us = excluded.created_us, value_id = excluded.value_id, data = excluded.data "
                    f"WHERE (excluded.event_us, excluded.created_us, excluded.value_id) "
                    f"> ({table}.event_us, {table}.created_us, {table}.value_id)",
                    params,
                )
                written += max(cursor.rowcount, 0)
        return written

    def read(self, wanted: list[tuple[FeatureView, list[str]]]) -> list[list[OnlineRecord | None]]:
        query = Q(pk__in=[])
        for view, keys in wanted:
            query |= Q(view_id=view.pk, entity_key__in=keys)
        found = {
            (view_id, key): OnlineRecord(event_us, created_us, data, value_id)
            for view_id, key, event_us, created_us, value_id, data in OnlineValue.objects.filter(query).values_list(
                "view_id", "entity_key", "event_us", "created_us", "value_id", "data"
            )
        }
        return [[found.get((view.pk, key)) for key in keys] for view, keys in wanted]

    def read_rows(self, wanted: list[tuple[FeatureView, list[str]]]) -> list[list[list[Any] | None]]:
        answers = []
        for (view, _), block in zip(wanted, self.read(wanted), strict=True):
            names, schema = view.feature_names, schema_id(view)
            answers.append([None if r is None else [r.event_us, r.created_us, schema, r.value_id,
                                                    *[r.data.get(n) for n in names]]
                            for r in block])  # fmt: skip
        return answers

    def count(self, view: FeatureView) -> int:
        return OnlineValue.objects.filter(view=view).count()

    def drop(self, view: FeatureView) -> None:
        OnlineValue.objects.filter(view=view).delete()

    def delete(self, view: FeatureView, keys: list[str]) -> int:
        return OnlineValue.objects.filter(view=view, entity_key__in=keys).delete()[0]


def _build() -> OnlineStore:
    if settings.MODELWORKS_FEATURES_ONLINE_STORE == "redis":
        return RedisOnlineStore(settings.REDIS_URL)
    return DatabaseOnlineStore()


online_store = PerProcess(_build)


def latest_per_entity(rows: Iterable[tuple[str, int, int, int, dict[str, Any]]]) -> dict[str, OnlineRecord]:
    """Of (entity_key, event_us, created_us, value_id, data) rows, the newest per entity: latest event, then latest
    created, then highest value id (the last written)."""
    latest: dict[str, OnlineRecord] = {}
    for key, event_us, created_us, value_id, data in rows:
        current = latest.get(key)
        if current is None or (event_us, created_us, value_id) >= (current.event_us, current.created_us,
                                                                   current.value_id):  # fmt: skip
            latest[key] = OnlineRecord(event_us, created_us, data, value_id)
    return latest
