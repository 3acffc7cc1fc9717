"""The prediction log's day partitions on PostgreSQL: range partitions on `created_at`, one per UTC day.

Migration 0012 made serving_predictionlog a partitioned table; SQLite keeps one plain table and none of this applies.
Beat makes each day's partition MODELWORKS_LOG_PARTITIONS_AHEAD_DAYS ahead (serving.keep_log_partitions, hourly).
A row of a day that has no partition (beat stopped for days, a clock far off, a row moved back in time by the demo
or an admin) lands in the DEFAULT partition: no write ever fails or becomes a dead letter for want of a partition,
and the flusher never runs DDL on the request side. When beat then makes that day's partition it moves the day's rows
out of the default into it; retention deletes what the default holds past the cutoff (normally nothing).

Each partition carries its own unique index on (request_id, model_name, retry_key): Postgres wants the partition key
in a unique constraint of the whole table, and a retry of a request lands in the same day as the request (its retry
window divides a day), so the per-day index is the same rule as before (see PredictionLog). The default partition
has the same index.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

TABLE = "serving_predictionlog"
DEFAULT = f"{TABLE}_default"
_NAME = re.compile(rf"^{TABLE}_(\d{{8}})$")
_LOCK = 0x50524C47  # pg_advisory_xact_lock key: one partition maker at a time ("PRLG")
LOCK_TIMEOUT = "3s"  # DDL on the log waits at most this for its lock, so writers never queue behind it for long


def partition_name(day: date) -> str:
    return f"{TABLE}_{day:%Y%m%d}"


def day_of(name: str) -> date | None:
    """The day a partition's name stands for; None for the default partition or any other table."""
    match = _NAME.match(name)
    return datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=UTC).date() if match else None


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def is_partitioned() -> bool:
    """True when the log is a partitioned table (PostgreSQL after migration 0012)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


def day_partitions() -> list[str]:
    """The log's day partitions (not the default), oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        return sorted(name for (name,) in cursor.fetchall() if day_of(name) is not None)


def create_day_partitions(days: Iterable[date]) -> list[str]:
    """Make sure each day has its partition, moving its rows out of the default partition; the names created.
    Safe to run from several processes at once (they take turns)."""
    wanted = sorted(set(days))
    existing = set(day_partitions())
    created = []
    for day in wanted:
        name = partition_name(day)
        if name in existing:
            continue
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
            cursor.execute("SELECT to_regclass(%s)", [name])
            if cursor.fetchone()[0] is not None:  # another process made it meanwhile
                continue
            start, end = day_start(day), day_start(day + timedelta(days=1))
            # Rows of this day already in the default partition move into the new one; holding the default's lock
            # until commit keeps new ones from landing there meanwhile. Names are ours (digits), bounds parameters.
            cursor.execute(f"LOCK TABLE {DEFAULT} IN SHARE MODE")
            cursor.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
            cursor.execute(
                f"WITH moved AS (DELETE FROM {DEFAULT} WHERE created_at >= %s AND created_at < %s RETURNING *)"  # noqa: S608
                f" INSERT INTO {name} SELECT * FROM moved",
                [start, end],
            )
            cursor.execute(f"CREATE UNIQUE INDEX {name}_one_per_request ON {name} (request_id, model_name, retry_key)")
            cursor.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)", [start, end])
            created.append(name)
    return created


def keep_partitions(*, now: datetime | None = None) -> list[str]:
    """Beat's job: today and MODELWORKS_LOG_PARTITIONS_AHEAD_DAYS ahead have their partitions, and so does every
    day the default partition holds rows of within retention. The names created."""
    if not is_partitioned():
        return []
    today = utc_day(now or timezone.now())
    last = today + timedelta(days=settings.MODELWORKS_LOG_PARTITIONS_AHEAD_DAYS)
    days = {today + timedelta(days=n) for n in range((last - today).days + 1)}
    retention = settings.MODELWORKS_RETENTION_PREDICTIONS_DAYS
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM {DEFAULT}"  # noqa: S608
            " WHERE created_at >= %s AND created_at < %s",
            [day_start(today - timedelta(days=retention)) if retention > 0 else datetime.min.replace(tzinfo=UTC),
             day_start(last + timedelta(days=1))],
        )  # fmt: skip
        days |= {day for (day,) in cursor.fetchall()}
    return create_day_partitions(days)
