"""The online store: the latest value per (view, entity), with its event and created time.

Two implementations behind one interface:
- RedisOnlineStore (REDIS_URL set): one Redis hash per view, field = entity key, value = "event_us:created_us:json".
  A read is one pipelined round trip (one HMGET per view) whatever the number of entities; a write is a Lua script
  that replaces a value only when it is newer, so concurrent pushes and materialization runs can never move a value
  back in time, and rewriting what is already there writes nothing.
- DatabaseOnlineStore (the embedded default, no Redis): the same rule as one INSERT .. ON CONFLICT DO UPDATE .. WHERE
  in the `features_onlinevalue` table, which every process of `make run` (web, worker, beat) shares.

"Newer" means a later event time, or the same event time created later.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from features.models import FeatureView, OnlineValue
from serving.per_process import PerProcess

WRITE_CHUNK = 1000


@dataclass(frozen=True)
class OnlineRecord:
    event_us: int
    created_us: int
    data: dict[str, Any]


class OnlineStore(Protocol):
    def write(self, view: FeatureView, records: dict[str, OnlineRecord]) -> int: ...
    def read(self, wanted: list[tuple[FeatureView, list[str]]]) -> list[list[OnlineRecord | None]]: ...
    def count(self, view: FeatureView) -> int: ...
    def drop(self, view: FeatureView) -> None: ...


_WRITE_IF_NEWER = """
local written = 0
for i = 1, #ARGV, 2 do
  local new = ARGV[i + 1]
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local replace = true
  if old then
    local oe, oc = string.match(old, '^(%-?%d+):(%-?%d+):')
    local ne, nc = string.match(new, '^(%-?%d+):(%-?%d+):')
    oe, oc, ne, nc = tonumber(oe), tonumber(oc), tonumber(ne), tonumber(nc)
    replace = ne > oe or (ne == oe and nc > oc)
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


def _decode(raw: bytes | None) -> OnlineRecord | None:
    if raw is None:
        return None
    event_us, created_us, data = raw.split(b":", 2)
    return OnlineRecord(int(event_us), int(created_us), json.loads(data))


class RedisOnlineStore:
    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self._write_script = self.client.register_script(_WRITE_IF_NEWER)

    def write(self, view: FeatureView, records: dict[str, OnlineRecord]) -> int:
        items = list(records.items())
        written = 0
        for start in range(0, len(items), WRITE_CHUNK):
            args: list[str] = []
            for key, record in items[start : start + WRITE_CHUNK]:
                args += [key, f"{record.event_us}:{record.created_us}:{json.dumps(record.data, separators=(',', ':'))}"]
            written += int(self._write_script(keys=[redis_key(view)], args=args))
        return written

    def read(self, wanted: list[tuple[FeatureView, list[str]]]) -> list[list[OnlineRecord | None]]:
        pipe = self.client.pipeline(transaction=False)
        for view, keys in wanted:
            pipe.hmget(redis_key(view), keys)
        return [[_decode(raw) for raw in answer] for answer in pipe.execute()]

    def count(self, view: FeatureView) -> int:
        return int(self.client.hlen(redis_key(view)))

    def drop(self, view: FeatureView) -> None:
        self.client.delete(redis_key(view))


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
                    params += [view.pk, key, record.event_us, record.created_us, json.dumps(record.data)]
                cursor.execute(
                    f"INSERT INTO {table} (view_id, entity_key, event_us, created_us, data) "  # noqa: S608 (our table)
                    f"VALUES {', '.join(['(%s, %s, %s, %s, %s)'] * len(chunk))} "
                    "ON CONFLICT (view_id, entity_key) DO UPDATE SET event_us = excluded.event_us, "
                    "created_us = excluded.created_us, data = excluded.data "
                    f"WHERE excluded.event_us > {table}.event_us "
                    f"OR (excluded.event_us = {table}.event_us AND excluded.created_us > {table}.created_us)",
                    params,
                )
                written += max(cursor.rowcount, 0)
        return written

    def read(self, wanted: list[tuple[FeatureView, list[str]]]) -> list[list[OnlineRecord | None]]:
        query = Q(pk__in=[])
        for view, keys in wanted:
            query |= Q(view_id=view.pk, entity_key__in=keys)
        found = {
            (view_id, key): OnlineRecord(event_us, created_us, data)
            for view_id, key, event_us, created_us, data in OnlineValue.objects.filter(query).values_list(
                "view_id", "entity_key", "event_us", "created_us", "data"
            )
        }
        return [[found.get((view.pk, key)) for key in keys] for view, keys in wanted]

    def count(self, view: FeatureView) -> int:
        return OnlineValue.objects.filter(view=view).count()

    def drop(self, view: FeatureView) -> None:
        OnlineValue.objects.filter(view=view).delete()


def _build() -> OnlineStore:
    if settings.MODELWORKS_FEATURES_ONLINE_STORE == "redis":
        return RedisOnlineStore(settings.REDIS_URL)
    return DatabaseOnlineStore()


online_store = PerProcess(_build)


def latest_per_entity(rows: Iterable[tuple[str, int, int, dict[str, Any]]]) -> dict[str, OnlineRecord]:
    """Of (entity_key, event_us, created_us, data) rows, the newest per entity; on equal times the later row wins
    (rows come in id order)."""
    latest: dict[str, OnlineRecord] = {}
    for key, event_us, created_us, data in rows:
        current = latest.get(key)
        if current is None or (event_us, created_us) >= (current.event_us, current.created_us):
            latest[key] = OnlineRecord(event_us, created_us, data)
    return latest
