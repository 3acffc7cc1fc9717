"""Materialization offline -> online: incremental from a watermark, by event-time range, idempotent, by command and
by a real Celery worker running the beat-scheduled task."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from config.celery import app
from features.models import FeatureValue, MaterializationRun
from features.services import feature_rows_check, feature_values_store, feature_view_materialize
from features.tasks import materialize_all, materialize_view
from tests.features.conftest import ago

pytestmark = pytest.mark.django_db


def store_offline(view, rows, created_ago_s: int = 60):
    created = timezone.now() - timedelta(seconds=created_ago_s)
    feature_values_store(view=view, rows=feature_rows_check(view=view, rows=rows), written_at=created)


def test_incremental_copies_the_newest_per_entity_and_a_rerun_writes_nothing(vitals, store, settings):
    settings.MODELWORKS_FEATURES_MATERIALIZE_LAG_S = 0
    store_offline(vitals, [
        {"patient_id": 1, "event_timestamp": ago(minutes=9), "heart_rate": 60.0},
        {"patient_id": 1, "event_timestamp": ago(minutes=3), "heart_rate": 66.0},
        {"patient_id": 2, "event_timestamp": ago(minutes=4), "heart_rate": 70.0},
        {"patient_id": 3, "event_timestamp": ago(hours=2), "heart_rate": 99.0},  # past the TTL: not worth copying
    ])  # fmt: skip
    first = feature_view_materialize(view=vitals)
    assert (first.rows_read, first.rows_written) == (3, 2)
    ones, twos, threes = (r[0] for r in [store.read([(vitals, [k])])[0] for k in "123"])
    assert ones.data["heart_rate"] == 66.0 and twos.data["heart_rate"] == 70.0 and threes is None
    again = feature_view_materialize(view=vitals)
    assert (again.rows_read, again.rows_written) == (0, 0)
    vitals.refresh_from_db()
    assert vitals.materialized_until == again.window_end

    late_row = {"patient_id": 1, "event_timestamp": ago(minutes=20), "heart_rate": 1.0}  # arrives late, is older
    store_offline(vitals, [late_row], created_ago_s=0)
    late = feature_view_materialize(view=vitals)
    assert (late.rows_read, late.rows_written) == (1, 0)
    assert store.read([(vitals, ["1"])])[0][0].data["heart_rate"] == 66.0


def test_values_created_in_the_last_seconds_wait_for_the_next_run(vitals, store, settings):
    settings.MODELWORKS_FEATURES_MATERIALIZE_LAG_S = 30
    store_offline(vitals, [{"patient_id": 1, "event_timestamp": ago(minutes=1), "heart_rate": 1.0}], created_ago_s=1)
    assert feature_view_materialize(view=vitals).rows_read == 0
    settings.MODELWORKS_FEATURES_MATERIALIZE_LAG_S = 0
    assert feature_view_materialize(view=vitals).rows_written == 1


def test_a_range_run_covers_event_times_and_leaves_the_watermark(vitals, store):
    store_offline(vitals, [
        {"patient_id": 1, "event_timestamp": ago(minutes=50), "heart_rate": 1.0},
        {"patient_id": 2, "event_timestamp": ago(minutes=10), "heart_rate": 2.0},
    ])  # fmt: skip
    run = feature_view_materialize(view=vitals, start=timezone.now() - timedelta(minutes=30))
    assert (run.mode, run.rows_read, run.rows_written) == ("range", 1, 1)
    assert store.read([(vitals, ["1", "2"])])[0][0] is None
    vitals.refresh_from_db()
    assert vitals.materialized_until is None
    assert feature_view_materialize(view=vitals, start=timezone.now() - timedelta(minutes=30)).rows_written == 0


def test_the_command_materializes_one_or_all_views(vitals, store, capsys):
    store_offline(vitals, [{"patient_id": 1, "event_timestamp": ago(minutes=5), "heart_rate": 1.0}])
    call_command("materialize", "vitals")
    assert "vitals: 1 values read, 1 written online" in capsys.readouterr().out
    call_command("materialize")
    assert "vitals: 0 values read, 0 written online" in capsys.readouterr().out
    call_command("materialize", "--start", ago(hours=1), "--end", timezone.now().isoformat())
    assert "vitals: 1 values read, 0 written online" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no feature view named 'nope'"):
        call_command("materialize", "nope")
    with pytest.raises(CommandError, match="--start: 'soon' is not an ISO-8601 time"):
        call_command("materialize", "--start", "soon")
    assert MaterializationRun.objects.filter(view=vitals).count() == 3


def test_the_beat_schedule_runs_the_sweep():
    entries = {entry["task"]: entry for entry in app.conf.beat_schedule.values()}
    assert "features.materialize_all" in entries and entries["features.materialize_all"]["options"]["expires"] > 0


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_materializes_on_schedule_idempotently(worker, settings):
    from features.definitions import definitions_apply
    from features.models import FeatureView
    from features.online import RedisOnlineStore
    from tests.features.conftest import PATIENT, VITALS

    definitions_apply(entities=[PATIENT], views=[VITALS])
    view = FeatureView.objects.select_related("entity").get(name="vitals")
    store_offline(view, [{"patient_id": i, "event_timestamp": ago(minutes=5), "heart_rate": float(i)}
                         for i in range(50)])  # fmt: skip
    assert materialize_all.apply_async(queue=worker).get(timeout=90) == {"views": 1, "read": 50, "written": 50}
    assert materialize_all.apply_async(queue=worker).get(timeout=60) == {"views": 1, "read": 0, "written": 0}
    assert materialize_view.apply_async(args=[view.pk], queue=worker).get(timeout=60) == {"read": 0, "written": 0}
    online = RedisOnlineStore(settings.REDIS_URL)
    assert online.count(view) == 50 and online.read([(view, ["7"])])[0][0].data["heart_rate"] == 7.0
    assert FeatureValue.objects.count() == 50


@pytest.mark.django_db(transaction=True)
def test_a_materialization_asked_for_is_run_by_a_worker_with_its_progress_committed(default_queue_worker, settings):
    """The console's "Materialize now": queued, picked up by a real worker process, then done with what it wrote."""
    from features import services
    from features.definitions import definitions_apply
    from features.models import FeatureView, MaterializationJob
    from features.online import RedisOnlineStore
    from tests.features.conftest import PATIENT, VITALS

    definitions_apply(entities=[PATIENT], views=[VITALS])
    view = FeatureView.objects.select_related("entity").get(name="vitals")
    rows = services.MATERIALIZE_CHUNK * 2 + 7
    store_offline(view, [{"patient_id": i, "event_timestamp": ago(minutes=5), "heart_rate": float(i % 90)}
                         for i in range(rows)])  # fmt: skip
    job = services.materialization_request(view=view)
    assert job.status == MaterializationJob.Status.QUEUED
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.finished:
            break
        time.sleep(0.05)
    assert job.status == MaterializationJob.Status.DONE, job.message
    assert (job.rows_read, job.rows_written, job.rows_total, job.percent) == (rows, rows, rows, 100)
    assert job.run is not None and job.run.rows_written == rows
    assert RedisOnlineStore(settings.REDIS_URL).count(view) == rows


@pytest.mark.django_db(transaction=True)
def test_progress_is_visible_to_other_processes_while_a_run_holds_the_view():
    """A run holds no transaction around its copy: what its progress callback writes is committed at once, so the
    console (another process) sees it while the run still holds the view's lock."""
    import threading

    from django.db import connection as main_connection

    from features import services
    from features.definitions import definitions_apply
    from features.models import FeatureView, MaterializationJob
    from tests.features.conftest import PATIENT, VITALS

    definitions_apply(entities=[PATIENT], views=[VITALS])
    view = FeatureView.objects.select_related("entity").get(name="vitals")
    rows = services.MATERIALIZE_CHUNK * 2 + 7
    store_offline(view, [{"patient_id": i, "event_timestamp": ago(minutes=5), "heart_rate": 1.0}
                         for i in range(rows)])  # fmt: skip
    job = MaterializationJob.objects.create(view=view, status=MaterializationJob.Status.RUNNING)
    seen, refused = [], []

    def elsewhere() -> None:  # another connection, as another process would read it
        from django.db import connection

        seen.append(MaterializationJob.objects.values_list("rows_read", "rows_total").get(pk=job.pk))
        refused.append(services.feature_view_materialize(view=view) is None)  # the view is held meanwhile
        connection.close()

    def progress(read: int, total: int) -> None:
        MaterializationJob.objects.filter(pk=job.pk).update(rows_read=read, rows_total=total)
        assert not main_connection.in_atomic_block
        reader = threading.Thread(target=elsewhere)
        reader.start()
        reader.join()

    run = services.feature_view_materialize(view=view, progress=progress)
    chunk = services.MATERIALIZE_CHUNK
    assert seen == [(chunk, rows), (2 * chunk, rows), (rows, rows)]
    assert refused == [True, True, True]
    assert run is not None and run.rows_read == rows
