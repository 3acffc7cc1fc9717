"""The prediction log partitioned by day on Postgres: windows read only their days, retention drops whole days, a row
of a day nobody prepared still lands (and beat moves it to its day), and the migration keeps every row logged."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from django.db import connection, models
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config.migration_ops import AddIndexOnline
from experiments.metrics import _quality_rows
from monitoring.traffic import _counted
from monitoring.windows import Window, answered_logs, current_frame
from serving import partitions
from serving.models import DeadLetter, PredictionLog
from serving.prediction_log import LogEntry, insert
from serving.retention import drop_days_before
from serving.services import prediction_log_prune
from serving.tasks import keep_log_partitions

NOON = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
PARTITION = re.compile(r"serving_predictionlog_\d{8}")


def logged(entries: list[LogEntry]) -> None:
    """Rows of past days, as if their days' partitions had been there: written, then beat gives each day its own."""
    insert(entries)
    partitions.keep_partitions()


def where(request_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM serving_predictionlog WHERE request_id = %s", [request_id])
        return cursor.fetchone()[0]


def entry(at: datetime, *, route: str = "alias:production", model: str = "m", version: int = 1) -> LogEntry:
    return LogEntry(request_id=uuid.uuid4().hex, model_name=model, version=version, routing_key="k",
                    inputs=[{"x": 1.5}], outputs={"predictions": [1]}, latency_ms=1.0, cached=False,
                    route_reason=route, outcome="ok", created_at=at)  # fmt: skip


def scanned(plan: str) -> set[str]:
    return set(PARTITION.findall(plan))


def day(moment: datetime) -> str:
    return partitions.partition_name(partitions.utc_day(moment))


@pytest.mark.django_db
def test_window_queries_read_only_the_partitions_of_their_days():
    logged([entry(NOON - timedelta(days=n), route=f"rollout:1:{arm}") for n in range(5) for arm in ("a", "b")])
    since, until = NOON - timedelta(days=1, hours=1), NOON + timedelta(minutes=1)
    window_days = {day(since), day(until)}
    version = SimpleNamespace(model=SimpleNamespace(name="m", task="classification"), version=1,
                              signature={"inputs": [{"name": "x", "dtype": "float64"}]})  # fmt: skip

    # The monitor's drift window, a rollout arm's window (rollouts/analysis.py) and the traffic rollup's minutes.
    monitor = answered_logs(version, Window(since=since, until=until))
    arm = PredictionLog.objects.filter(route_reason="rollout:1:a", created_at__gte=since, created_at__lte=until)
    assert scanned(monitor.explain()) == window_days
    assert scanned(arm.explain()) == window_days
    assert scanned(_counted(since, until).explain()) == window_days
    # An experiment's window has a start and no end: nothing before the start is read.
    experiment = SimpleNamespace(route_owner="rollout:1", arm_reason=lambda name: f"rollout:1:{name}",
                                 model=SimpleNamespace(name="m"))  # fmt: skip
    with CaptureQueriesContext(connection) as queries:
        _quality_rows(experiment, ["a", "b"], classification=True, since=since)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + next(q["sql"] for q in queries if "serving_predictionlog" in q["sql"]))
        plan = "\n".join(row for (row,) in cursor.fetchall())
    assert scanned(plan) and min(scanned(plan)) == day(since)
    # ... and the windows still hold what they should: two requests a day, one version's rows for the monitor.
    assert arm.count() == 2 and len(current_frame(version, Window(since=since, until=until))) == 4


@pytest.mark.django_db
def test_a_row_of_a_day_without_a_partition_is_logged_and_beat_moves_it_into_its_day(settings):
    settings.MODELWORKS_LOG_PARTITIONS_AHEAD_DAYS = 2
    far = NOON + timedelta(days=40)  # past what beat prepared: a clock far off, or beat stopped for weeks
    rows = [entry(NOON), entry(far), entry(far)]
    insert(rows)
    insert(rows)  # a retried flush: still once each
    assert [where(r.request_id) for r in rows] == [day(NOON), partitions.DEFAULT, partitions.DEFAULT]
    assert not DeadLetter.objects.exists()

    assert partitions.keep_partitions(now=far) == [day(far + timedelta(days=n)) for n in range(3)]
    assert [where(r.request_id) for r in rows] == [day(NOON), day(far), day(far)]
    assert sorted(PredictionLog.objects.values_list("created_at", flat=True)) == [NOON, far, far]
    assert partitions.keep_partitions(now=far) == []  # nothing left to make
    # Beat's task, from the real today (NOON's day, unless the suite crossed midnight since it was imported): the
    # coming days that have no partition yet.
    coming = [day(timezone.now() + timedelta(days=n)) for n in range(3)]
    before = set(partitions.day_partitions())
    assert keep_log_partitions() == [name for name in coming if name not in before]
    assert set(coming) <= set(partitions.day_partitions())
    beat = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "serving.keep_log_partitions" in beat


@pytest.mark.django_db
def test_retention_drops_each_past_day_in_one_statement_and_deletes_no_row():
    logged([entry(NOON - timedelta(days=n)) for n in (10, 10, 9, 1, 0)])
    with CaptureQueriesContext(connection) as queries:
        dropped = drop_days_before(NOON - timedelta(days=5))
    statements = [q["sql"] for q in queries]
    deletes = [s for s in statements if s.lstrip().upper().startswith("DELETE")]
    assert all(s.startswith("DELETE FROM serving_predictionlog_default ") for s in deletes)  # strays only
    drops = [s for s in statements if s.startswith("DROP TABLE")]
    assert drops == [f"DROP TABLE {day(NOON - timedelta(days=n))}" for n in (10, 9)]
    assert dropped.rows == 3 and not dropped.busy
    assert sorted(PredictionLog.objects.values_list("created_at", flat=True)) == [NOON - timedelta(days=1), NOON]
    # The service the beat task and `prune_predictions` call; a late row of a dropped day lands in the default
    # partition and goes by the next run.
    insert([entry(NOON - timedelta(days=10))])
    assert prediction_log_prune(before=NOON - timedelta(days=5)) == 1
    assert PredictionLog.objects.count() == 2


@pytest.mark.django_db  # DDL is transactional on Postgres: both migrations are undone with the test
def test_the_migration_keeps_every_row_and_id_already_logged():
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("serving")
    unpartitioned = [("serving", "0009_invalidate_raw_tokens")]
    executor.migrate(unpartitioned)
    try:
        assert not partitions.is_partitioned()
        # Written with the log's model as it was then (later migrations add columns today's writer fills).
        old_log = executor.loader.project_state(unpartitioned).apps.get_model("serving", "PredictionLog")
        old_log.objects.bulk_create(
            old_log(request_id=uuid.uuid4().hex, model_name="m", version=1, routing_key="k", inputs=[{"x": 1.5}],
                    outputs={"predictions": [1]}, latency_ms=1.0, route_reason="alias:production",
                    created_at=NOON - timedelta(days=days))
            for days in (400, 2, 0, 0)
        )  # fmt: skip
        before = list(PredictionLog.objects.order_by("id").values_list("id", "request_id", "created_at"))
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
    assert partitions.is_partitioned()
    assert list(PredictionLog.objects.order_by("id").values_list("id", "request_id", "created_at")) == before
    assert day(NOON - timedelta(days=400)) in partitions.day_partitions()
    insert([entry(NOON)])
    assert PredictionLog.objects.order_by("-id").first().id > before[-1][0]  # the id sequence goes on


@pytest.mark.django_db(transaction=True)  # CREATE INDEX CONCURRENTLY cannot run inside a transaction
def test_an_index_added_online_to_the_partitioned_log_is_built_on_every_partition_and_valid():
    partitions.create_day_partitions([partitions.utc_day(NOON) - timedelta(days=1)])
    state = MigrationLoader(connection).project_state()
    operation = AddIndexOnline("predictionlog", models.Index(fields=["caller", "created_at"], name="predlog_by_caller"))
    added = state.clone()
    operation.state_forwards("serving", added)
    with connection.schema_editor(atomic=False) as editor:
        operation.database_forwards("serving", editor, state, added)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'predlog_by_caller'::regclass")
            assert cursor.fetchone() == (True,)  # valid: every partition has its part
            cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'predlog_by_caller'::regclass")
            assert cursor.fetchone()[0] == len(partitions.day_partitions()) + 1 == 3  # the days and the default
        tomorrow = partitions.create_day_partitions([partitions.utc_day(NOON) + timedelta(days=1)])
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s AND indexdef LIKE '%%(caller,%%'",
                           tomorrow)  # fmt: skip
            assert cursor.fetchone()[0] == 1  # a day made later gets it by itself
    finally:
        with connection.schema_editor(atomic=False) as editor:
            operation.database_backwards("serving", editor, added, state)
        with connection.cursor() as cursor:
            for name in partitions.day_partitions():
                if name != day(timezone.now()):
                    cursor.execute(f"DROP TABLE {name}")  # later tests' teardowns truncate fewer tables
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('predlog_by_caller')")
        assert cursor.fetchone() == (None,)
