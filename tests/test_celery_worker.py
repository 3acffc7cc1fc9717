"""A real Celery worker process, on the real Redis broker, runs the registry's integrity sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from config.celery import app
from registry import services
from registry.models import ModelVersion, RegistryEvent
from registry.tasks import verify_all_artifacts, verify_artifact

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def worker(artifact_root, tmp_path):
    """Start `celery worker` on its own queue against the test database; stop it (TERM, then KILL) afterwards."""
    db = connection.settings_dict
    queue = f"test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "ARTIFACT_ROOT": str(artifact_root),
        "DEBUG": "1",
    }
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-Q", queue, "--loglevel", "INFO"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield queue
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_verifies_artifacts_and_marks_a_tampered_one(worker, classifier_model, logreg, artifact_root):
    good = services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    bad = services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    (artifact_root / bad.artifact_path).write_bytes(logreg.artifact[:-1] + b"!")

    assert verify_artifact.apply_async(args=[good.pk], queue=worker).get(timeout=90) is True
    assert verify_artifact.apply_async(args=[bad.pk], queue=worker).get(timeout=60) is False
    assert ModelVersion.objects.get(pk=bad.pk).integrity_failed_at is not None
    assert ModelVersion.objects.get(pk=good.pk).integrity_failed_at is None
    assert RegistryEvent.objects.filter(version=bad, action="version.integrity_failed").count() == 1

    # The beat-scheduled sweep skips versions already known bad.
    assert verify_all_artifacts.apply_async(queue=worker).get(timeout=60) == {"checked": 1, "failed": 0}


def test_celery_speaks_json_only_and_acknowledges_late():
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.broker_url.startswith("redis://")
    assert "registry.verify_all_artifacts" in {entry["task"] for entry in app.conf.beat_schedule.values()}
