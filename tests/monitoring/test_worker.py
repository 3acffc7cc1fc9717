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

from monitoring.models import Alert, DriftReport, Feedback, Monitor
from monitoring.services.monitors import monitor_create
from monitoring.tasks import deliver_webhook, join_feedback, run_due_monitors
from tests.monitoring.conftest import flush, predict_each, rows, shifted

ROOT = Path(__file__).resolve().parents[2]
BACKOFF_MS = 2000


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
        # Webhook retries: 3 attempts, waiting 2 s then 4 s in the queue.
        "MODELWORKS_WEBHOOK_ATTEMPTS": "3",
        "MODELWORKS_WEBHOOK_BACKOFF_MS": str(BACKOFF_MS),
        "MODELWORKS_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",  # the local receiver
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


@pytest.mark.django_db(transaction=True)
def test_a_failing_webhook_is_retried_by_celery_without_holding_the_worker_then_given_up(worker, cancer_v1, receiver):
    monitor = monitor_create(model=cancer_v1.model, name="hooked", webhook_url=receiver.url)
    alert = Alert.objects.create(monitor=monitor, version=1, kind="dataset_drift", subject="", message="drift")
    backoff = BACKOFF_MS / 1000

    receiver.failures = 2  # two 500s, then 200
    delivery = deliver_webhook.apply_async(args=[alert.pk, "firing"])
    assert _wait_for(lambda: receiver.attempts >= 1), worker.read_text()[-3000:]
    # The one solo worker runs other work while the delivery waits for its retry: nothing sleeps in the task.
    assert join_feedback.apply_async().get(timeout=30) == 0
    assert receiver.attempts == 1, "the worker was held by the webhook between its attempts"
    assert delivery.get(timeout=60) is True
    assert receiver.attempts == 3 and len(receiver.bodies) == 1
    first, second, third = receiver.attempted_at
    assert second - first >= backoff * 0.9 and third - second >= 2 * backoff * 0.9  # exponential backoff
    assert Alert.objects.get(pk=alert.pk).webhook_status == "firing: HTTP 200 after 3 attempt(s)"

    receiver.failures = 100  # a receiver that keeps failing: three attempts, then given up and recorded
    assert deliver_webhook.apply_async(args=[alert.pk, "resolved"]).get(timeout=60) is False
    assert receiver.attempts == 6 and len(receiver.bodies) == 1
    assert Alert.objects.get(pk=alert.pk).webhook_status == "resolved: HTTP 500 after 3 attempt(s)"


@pytest.mark.django_db(transaction=True)
def test_feedback_posted_is_joined_by_the_worker_after_the_request(worker, api, cancer_v1, logreg):
    ids = predict_each("cancer", rows(logreg.X_test, 0, 3))
    flush()
    response = api.post("/api/v1/feedback", [{"request_id": r, "actual": 1} for r in ids], format="json")
    assert response.status_code == 202 and response.json() == {"received": 3}
    joined = Feedback.objects.filter(joined_at__isnull=False)
    assert _wait_for(lambda: joined.count() == 3), worker.read_text()[-3000:]
    assert set(joined.values_list("model_name", "version")) == {("cancer", 1)}


def test_the_monitor_tick_is_on_the_beat_schedule():
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"monitoring.run_due_monitors", "monitoring.join_feedback"} <= tasks
