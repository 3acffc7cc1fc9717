"""Retention: rows older than a number of days go, on beat (config/settings.py's schedule).

Each app's task calls `delete_older` for its own tables with its own MODELWORKS_RETENTION_*_DAYS; 0 keeps forever.
The prediction log on PostgreSQL is partitioned by day (serving/partitions.py) and loses whole days instead:
`drop_days_before` drops each day wholly past the cutoff, one DROP TABLE per day, no row deleted."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from serving import partitions

logger = logging.getLogger(__name__)


def retention_cutoff(days: int) -> datetime | None:
    """What is older than this goes; None when `days` is 0 (keep everything)."""
    return timezone.now() - timedelta(days=days) if days > 0 else None


def delete_older(rows: QuerySet, field: str, before: datetime, *, chunk: int = 10_000) -> int:
    """Delete the rows whose `field` is before `before`, `chunk` at a time, so a large prune never holds one long
    lock; how many went."""
    deleted = 0
    old = rows.filter(**{f"{field}__lt": before})
    while True:
        with transaction.atomic():
            ids = list(old.values_list("pk", flat=True)[:chunk])
            if not ids:
                return deleted
            deleted += rows.model.objects.filter(pk__in=ids).delete()[0]


@dataclass(frozen=True)
class Dropped:
    days: list[str]  # the partitions dropped
    rows: int  # the rows gone with them (and from the default partition)
    kept_from: datetime  # the start of the oldest day kept: rows from there to the cutoff stay until their day goes
    busy: list[str]  # partitions whose lock did not come within LOCK_TIMEOUT: the next run drops them


def drop_days_before(before: datetime) -> Dropped:
    """Drop every day partition of the log that ends at or before `before` (the day holding `before` stays whole):
    one DROP TABLE per day, no row deleted. What the default partition holds of those days is deleted.

    A DROP needs the log's ACCESS EXCLUSIVE lock for a moment; waiting for it behind a long window query would queue
    every writer behind the DROP, so it waits at most partitions.LOCK_TIMEOUT and leaves that day to the next run.
    (DETACH ... CONCURRENTLY, which would not need that lock, is refused while a default partition exists.)"""
    import psycopg2.errors
    from django.db import OperationalError

    kept_from = partitions.day_start(partitions.utc_day(before))
    days, busy, rows = [], [], 0
    for name in partitions.day_partitions():
        if partitions.day_start(partitions.day_of(name)) >= kept_from:
            break
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{partitions.LOCK_TIMEOUT}'")
                cursor.execute(f"SELECT count(*) FROM {name}")  # noqa: S608 - a name from the catalogue, our pattern
                count = cursor.fetchone()[0]
                cursor.execute(f"DROP TABLE {name}")
        except OperationalError as exc:
            if not isinstance(exc.__cause__, psycopg2.errors.LockNotAvailable):
                raise
            logger.warning("prediction log retention: %s busy for %s, left for the next run", name,
                           partitions.LOCK_TIMEOUT)  # fmt: skip
            busy.append(name)
            continue
        days.append(name)
        rows += count
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {partitions.DEFAULT} WHERE created_at < %s", [kept_from])  # noqa: S608
        rows += cursor.rowcount
    return Dropped(days=days, rows=rows, kept_from=kept_from, busy=busy)
