"""Retention on beat: the prune tasks on the schedule from settings, run by a real Celery worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from celery.schedules import crontab
from django.conf import settings
from django.db import connection
from django.utils import timezone

from monitoring.models import BusinessEvent, Feedback
from monitoring.services.events import EventItem, business_events_record
from monitoring.services.feedback import FeedbackItem, feedback_record
from monitoring.tasks import prune_feedback_and_events
from serving import prediction_log
from serving import services as serving
from serving.background import store_dead_letters
from serving.models import DeadLetter, PredictionLog
from serving.tasks import prune_dead_letters, prune_predictions
from tests.serving.conftest import fresh_serving_state, production, rows_of  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
RETENTION = ("serving.prune_predictions", "serving.prune_dead_letters", "monitoring.prune_feedback_and_events")


def beat_schedule(**env: str) -> dict[str, str]:
    """The retention entries' schedules as a fresh process reads them from its environment."""
    code = ("from django.conf import settings\n"
            "for entry in settings.CELERY_BEAT_SCHEDULE.values():\n"
            "    print(entry['task'], repr(entry['schedule']), sep='|')")  # fmt: skip
    run = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "DEBUG": "1", **env}, check=True)  # fmt: skip
    return dict(line.split("|", 1) for line in run.stdout.splitlines() if "|" in line)


def test_retention_runs_on_beat_on_the_period_settings_give():
    assert set(RETENTION) <= {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    daily = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "serving.prune_predictions")
    assert daily["schedule"] == crontab(minute=30, hour="*/24")  # the default: once a day, at 00:30 UTC
    six_hourly = beat_schedule(MODELWORKS_RETENTION_EVERY_S="21600")
    assert all("<crontab: 30 */6 " in six_hourly[task] for task in RETENTION)
    with pytest.raises(subprocess.CalledProcessError) as refused:
        beat_schedule(MODELWORKS_RETENTION_EVERY_S="25200")  # 7 hours does not divide a day
    assert "MODELWORKS_RETENTION_EVERY_S=25200" in refused.value.stderr


@pytest.fixture
def worker(artifact_root, tmp_path):
    """`celery worker` on this suite's Redis with 30-day retention everywhere; TERM (then KILL) afterwards."""
    db = connection.settings_dict
    env = {
        **os.environ, "DEBUG": "1", "REDIS_URL": settings.REDIS_URL, "ARTIFACT_ROOT": str(artifact_root),
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        **{f"MODELWORKS_RETENTION_{name}_DAYS": "30" for name in ("PREDICTIONS", "DEAD_LETTERS", "FEEDBACK", "EVENTS")},
    }  # fmt: skip
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "--loglevel", "INFO"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    yield tmp_path / "worker.log"
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


@pytest.mark.django_db(transaction=True)
def test_the_worker_prunes_what_is_past_retention_and_keeps_the_rest(worker, production, logreg):  # noqa: F811
    old, recent = timezone.now() - timedelta(days=31), timezone.now() - timedelta(days=29)
    ids = [serving.predict(model_name="cancer", payload={"instances": rows_of(logreg.X_test, 1)}).request_id
           for _ in range(3)]  # fmt: skip
    prediction_log.prediction_log().flush()
    PredictionLog.objects.filter(request_id__in=ids[:2]).update(created_at=old)
    PredictionLog.objects.filter(request_id=ids[2]).update(created_at=recent)
    store_dead_letters("prediction_log", [({"request_id": "a"}, "refused"), ({"request_id": "b"}, "refused")])
    DeadLetter.objects.filter(payload__contains='"a"').update(created_at=old)
    feedback_record(items=[FeedbackItem(actual=1, request_id=ids[0], time=old),
                           FeedbackItem(actual=0, request_id=ids[2], time=recent)])  # fmt: skip
    business_events_record(
        items=[EventItem(key="k", name="buy", time=old), EventItem(key="k", name="buy", time=recent)]
    )

    assert prune_predictions.apply_async().get(timeout=90) == 2, worker.read_text()[-3000:]
    assert prune_dead_letters.apply_async().get(timeout=30) == 1
    assert prune_feedback_and_events.apply_async().get(timeout=30) == {"feedback": 1, "business_events": 1}
    assert list(PredictionLog.objects.values_list("request_id", flat=True)) == [ids[2]]
    assert list(DeadLetter.objects.values_list("payload", flat=True)) == ['{"request_id": "b"}']
    assert list(Feedback.objects.values_list("request_id", flat=True)) == [ids[2]]
    assert list(BusinessEvent.objects.values_list("occurred_at", flat=True)) == [recent]


@pytest.mark.django_db
def test_a_retention_of_zero_keeps_everything(settings):
    settings.MODELWORKS_RETENTION_FEEDBACK_DAYS = 0
    settings.MODELWORKS_RETENTION_EVENTS_DAYS = 0
    business_events_record(items=[EventItem(key="k", name="buy", time=timezone.now() - timedelta(days=3650))])
    assert prune_feedback_and_events() == {"feedback": 0, "business_events": 0}
    assert BusinessEvent.objects.count() == 1
