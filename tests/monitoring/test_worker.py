"""The scheduled path on a real Celery worker and Redis broker: beat's tick queues a due monitor, the worker runs
it, the alert's webhook reaches a real local HTTP server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from monitoring.models import Alert, DriftReport, Monitor
from monitoring.services.monitors import monitor_create
from monitoring.tasks import run_due_monitors
from tests.monitoring.conftest import flush, predict_each, rows, shifted

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker(artifact_root, tmp_path):
    """`celery worker` on the default queue of this suite's own Redis database; TERM (then KILL) afterwards."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "ARTIFACT_ROOT": str(artifact_root),
        "DEBUG": "1",
    }
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "--loglevel", "INFO"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield tmp_path / "worker.log"
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def _wait_for(condition, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.django_db(transaction=True)
def test_beat_tick_runs_a_due_monitor_on_a_real_worker_and_the_webhook_arrives(worker, cancer_v1, logreg, receiver):
    predict_each("cancer", rows(shifted(logreg.X_test)))
    flush()
    monitor = monitor_create(model=cancer_v1.model, name="hourly", window_hours=1, webhook_url=receiver.url)
    disabled = monitor_create(model=cancer_v1.model, name="off", enabled=False)

    queued = run_due_monitors.apply_async().get(timeout=90)
    assert queued == [monitor.pk]
    assert run_due_monitors.apply_async().get(timeout=30) == []  # claimed: the next tick does not queue it again

    assert _wait_for(lambda: bool(receiver.bodies)), worker.read_text()[-3000:]
    (body,) = receiver.bodies
    report = DriftReport.objects.get(monitor=monitor)
    assert body["status"] == "firing" and body["report_id"] == report.pk and report.dataset_drift
    assert Alert.objects.get().webhook_status.startswith("firing: HTTP 200")
    assert not DriftReport.objects.filter(monitor=disabled).exists()
    assert Monitor.objects.get(pk=monitor.pk).last_run_at is not None


def test_the_monitor_tick_is_on_the_beat_schedule():
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"monitoring.run_due_monitors", "monitoring.join_feedback"} <= tasks
