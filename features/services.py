"""Feature store writes: validating rows, storing them offline, copying the newest online, materialization.

Definitions (entities, views) are written by features/definitions.py; batch files are read by features/ingest.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from features import metrics
from features.models import FeatureValue, FeatureView, MaterializationJob, MaterializationRun
from features.online import latest_per_entity, online_store
from features.schema import (
    EVENT_TIMESTAMP,
    dtype_problem,
    entity_key,
    entity_key_problem,
    normalise,
    parse_timestamp,
    to_us,
)

log = logging.getLogger(__name__)
MATERIALIZE_CHUNK = 5000
ADVISORY_LOCK_SPACE = 0x46454154  # "FEAT": keeps our locks apart from anyone else's


@dataclass(frozen=True)
class CheckedRow:
    entity_key: str
    event_ts: datetime
    data: dict[str, Any]
    created_ts: datetime | None = None  # None: the write time


class RowsRejected(Exception):
    """Some rows do not fit the view: `errors` names each row and field; nothing of the request was stored."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"row {errors[0]['row']}, {errors[0]['field']}: {errors[0]['message']}")
        self.errors = errors


def _problem(row: int, field: str | None, message: str) -> dict[str, Any]:
    return {"row": row, "field": field, "message": message}


def feature_rows_check(*, view: FeatureView, rows: Any, first_row: int = 0, now: datetime | None = None,
                       max_errors: int = 20) -> list[CheckedRow]:  # fmt: skip
    """Every row checked against the view's schema; RowsRejected with all problems (up to max_errors) otherwise.

    A row is {join_key: id, "event_timestamp": time, feature: value, ...} and optionally the view's created-timestamp
    column (`created_timestamp` unless the view names another; absent, null or empty: the write time). Times are read
    by schema.parse_timestamp; neither may lie more than the future tolerance ahead. Features a row leaves out are
    stored as null. Row numbers in errors count from `first_row` (a file's line, a request's index)."""
    if not isinstance(rows, list) or not rows:
        raise RowsRejected([_problem(first_row, "rows", "must be a non-empty list of objects")])
    entity = view.entity
    dtypes = view.dtypes
    created_column = view.created_timestamp_column  # "": the view takes no created times
    own = (entity.join_key, EVENT_TIMESTAMP, created_column) if created_column else (entity.join_key, EVENT_TIMESTAMP)
    latest_allowed = (now or timezone.now()) + timedelta(seconds=settings.MODELWORKS_FEATURES_FUTURE_TOLERANCE_S)
    checked, errors = [], []
    for index, row in enumerate(rows, start=first_row):
        if not isinstance(row, dict):
            errors.append(_problem(index, None, "must be an object of column: value"))
            continue
        row_errors = []
        if problem := entity_key_problem(entity, row.get(entity.join_key)):
            row_errors.append(_problem(index, entity.join_key, problem))
        event_ts = parse_timestamp(row.get(EVENT_TIMESTAMP))
        if event_ts is None:
            row_errors.append(_problem(index, EVENT_TIMESTAMP, "is missing or not an ISO-8601 time / epoch seconds"))
        elif event_ts > latest_allowed:
            row_errors.append(_problem(index, EVENT_TIMESTAMP, f"{event_ts.isoformat()} is in the future"))
        created_ts = None
        if created_column and (raw_created := row.get(created_column)) is not None and raw_created != "":
            created_ts = parse_timestamp(raw_created)
            if created_ts is None:
                row_errors.append(_problem(index, created_column, "is not an ISO-8601 time / epoch seconds"))
            elif created_ts > latest_allowed:
                row_errors.append(_problem(index, created_column, f"{created_ts.isoformat()} is in the future"))
        data = {}
        for name, value in row.items():
            if name in own:
                continue
            if name not in dtypes:
                row_errors.append(_problem(index, name, f"is not a feature of view {view.name}"))
            elif problem := dtype_problem(dtypes[name], value):
                row_errors.append(_problem(index, name, problem))
            else:
                data[name] = normalise(dtypes[name], value)
        if row_errors:
            errors += row_errors
            continue
        key = entity_key(row[entity.join_key])
        checked.append(CheckedRow(key, event_ts, {n: data.get(n) for n in dtypes}, created_ts))
    if errors:
        raise RowsRejected(errors[:max_errors])
    return checked


def feature_values_store(*, view: FeatureView, rows: list[CheckedRow], written_at: datetime | None = None
                         ) -> list[FeatureValue]:  # fmt: skip
    """Append rows to the offline store, in their order (ids are the write order), and keep the view's freshness;
    answers the stored values. A row without its own created time gets the write time, `written_at` (default now)."""
    written_at = written_at or timezone.now()
    with transaction.atomic():
        stored = FeatureValue.objects.bulk_create(
            [FeatureValue(view=view, entity_key=r.entity_key, event_ts=r.event_ts,
                          created_ts=r.created_ts or written_at, written_at=written_at, data=r.data)
             for r in rows],
            batch_size=2000,
        )  # fmt: skip
        newest = max(row.event_ts for row in rows)
        # Conditional: concurrent writers only take the row lock when they actually move freshness forward.
        FeatureView.objects.filter(pk=view.pk).filter(
            Q(newest_event_at__isnull=True) | Q(newest_event_at__lt=newest)
        ).update(newest_event_at=newest)
    return stored


def feature_values_push(*, view: FeatureView, rows: Any) -> dict[str, int]:
    """The push API: all rows or none go offline; then each entity's newest row goes online unless a newer value is
    already there. If the online write fails the values are safe offline and the next materialization copies them."""
    checked = feature_rows_check(view=view, rows=rows)
    stored = feature_values_store(view=view, rows=checked)
    metrics.VALUES_WRITTEN.labels(view.name, "push").inc(len(checked))
    latest = latest_per_entity((v.entity_key, to_us(v.event_ts), to_us(v.created_ts), v.pk, v.data) for v in stored)
    try:
        online = online_store().write(view, latest)
    except Exception:
        log.exception("online write of %d values for view %s failed; materialization will copy them", len(latest), view)
        online = 0
    return {"stored": len(checked), "online": online}


def feature_view_materialize(
    *, view: FeatureView, start: datetime | None = None, end: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MaterializationRun | None:  # fmt: skip
    """Copy the newest offline values to the online store.

    Incremental (no start/end): the values written since the view's watermark (by `written_at`, so a backfill with
    old created times is copied too), up to a few seconds ago (so rows of transactions still committing are not
    skipped), and move the watermark. With start/end: the values whose event time is in [start, end], watermark
    untouched. Either way only newer values are written, so running it again
    writes nothing. Answers None when another run holds this view right now. `progress(read, total)` is called
    after each chunk (outside any transaction of this function's own, so another process can show it)."""
    started = timezone.now()
    incremental = start is None and end is None
    with _claimed(view) as claimed:
        if not claimed:
            return None
        locked = FeatureView.objects.select_related("entity").get(pk=view.pk)
        values = FeatureValue.objects.filter(view=locked)
        if incremental:
            window_start = locked.materialized_until
            window_end = max(started - timedelta(seconds=settings.MODELWORKS_FEATURES_MATERIALIZE_LAG_S),
                             window_start or started - timedelta(days=365_000))  # fmt: skip
            values = values.filter(written_at__lte=window_end)
            if window_start is not None:
                values = values.filter(written_at__gt=window_start)
            # A value already older than the TTL can never be served online.
            values = values.filter(event_ts__gte=started - timedelta(seconds=locked.ttl_seconds))
        else:
            window_start, window_end = start, end or started
            values = values.filter(event_ts__lte=window_end)
            if window_start is not None:
                values = values.filter(event_ts__gte=window_start)
        read, written = _copy_latest(locked, values, progress)
        with transaction.atomic():
            if incremental:
                FeatureView.objects.filter(pk=view.pk).update(materialized_until=window_end)
            return MaterializationRun.objects.create(
                view=locked, mode="incremental" if incremental else "range", window_start=window_start,
                window_end=window_end, rows_read=read, rows_written=written, started_at=started,
                finished_at=timezone.now(),
            )  # fmt: skip


@contextmanager
def _claimed(view: FeatureView) -> Iterator[bool]:
    """One materialization per view at a time, without locking the view's row (pushes update it): a session-level
    advisory lock on Postgres, held for the run and released after it (or with the connection, should the process
    die), so the run itself needs no long transaction and its progress can be committed as it goes. SQLite
    (embedded) has one writer at a time, and a second run writes nothing the first has not."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [ADVISORY_LOCK_SPACE, view.pk])
        held = bool(cursor.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [ADVISORY_LOCK_SPACE, view.pk])


def _copy_latest(view: FeatureView, values, progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    read = written = 0
    total = values.count() if progress is not None else 0
    store = online_store()
    chunk: list[tuple[str, int, int, int, dict[str, Any]]] = []
    rows = values.order_by("id").values_list("entity_key", "event_ts", "created_ts", "id", "data")
    for key, event_ts, created_ts, value_id, data in rows.iterator(chunk_size=MATERIALIZE_CHUNK):
        chunk.append((key, to_us(event_ts), to_us(created_ts), value_id, data))
        if len(chunk) == MATERIALIZE_CHUNK:
            read, written = read + len(chunk), written + store.write(view, latest_per_entity(chunk))
            chunk = []
            if progress is not None:
                progress(read, max(total, read))
    if chunk:
        read, written = read + len(chunk), written + store.write(view, latest_per_entity(chunk))
    if progress is not None:
        progress(read, max(total, read))
    return read, written


def materialization_request(*, view: FeatureView, actor: Any = None) -> MaterializationJob:
    """Queue an incremental materialization of `view` for a worker and answer its job, whose status and progress
    the console shows as it runs. When the task queue cannot take it, the job is stored as failed saying so (nothing
    is lost: the values stay offline, and beat's sweep materializes them later anyway)."""
    from config.queueing import TaskNotQueued, enqueue
    from features import tasks

    job = MaterializationJob.objects.create(view=view, requested_by=actor if getattr(actor, "pk", None) else None)
    try:
        enqueue(tasks.run_materialization_job, job.pk)
    except TaskNotQueued as exc:
        MaterializationJob.objects.filter(pk=job.pk).update(
            status=MaterializationJob.Status.FAILED, message=str(exc), finished_at=timezone.now()
        )
        job.refresh_from_db()
    return job


def materialization_job_run(*, job: MaterializationJob) -> MaterializationJob:
    """Run a queued job (the worker's half of materialization_request), committing its progress as it goes."""
    Status = MaterializationJob.Status
    claimed = MaterializationJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        status=Status.RUNNING, started_at=timezone.now()
    )
    if not claimed:  # a redelivered task whose job another worker already ran
        return MaterializationJob.objects.get(pk=job.pk)

    def progress(read: int, total: int) -> None:
        MaterializationJob.objects.filter(pk=job.pk).update(rows_read=read, rows_total=total)

    try:
        run = feature_view_materialize(view=job.view, progress=progress)
    except Exception as exc:
        MaterializationJob.objects.filter(pk=job.pk).update(
            status=Status.FAILED, message=f"{exc.__class__.__name__}: {exc}", finished_at=timezone.now()
        )
        raise
    if run is None:
        outcome = {"status": Status.BUSY, "message": "another materialization held this view; nothing was copied"}
    else:
        outcome = {"status": Status.DONE, "run": run, "rows_read": run.rows_read, "rows_written": run.rows_written,
                   "rows_total": run.rows_read}  # fmt: skip
    MaterializationJob.objects.filter(pk=job.pk).update(**outcome, finished_at=timezone.now())
    return MaterializationJob.objects.get(pk=job.pk)
