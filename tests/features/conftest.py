"""Feature store fixtures: a patient entity with a small typed view, a clean view cache, and a real Celery worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from features import online
from features.definitions import definitions_apply
from features.models import FeatureView
from features.retrieval import view_cache

ROOT = Path(__file__).resolve().parents[2]

PATIENT = {"name": "patient", "join_key": "patient_id", "value_type": "int"}
VITALS = {
    "name": "vitals",
    "entity": "patient",
    "ttl": "1h",
    "owner": "ada@example.com",
    "features": [
        {"name": "heart_rate", "dtype": "float"},
        {"name": "steps", "dtype": "int"},
        {"name": "smoker", "dtype": "bool"},
        {"name": "ward", "dtype": "string"},
    ],
}


@pytest.fixture(autouse=True)
def fresh_view_cache():
    view_cache.clear()
    yield
    view_cache.clear()


@pytest.fixture(params=["redis", "database"])
def store(request, settings, monkeypatch):
    """Each online-store test runs on Redis and on the database store of the embedded default."""
    settings.MODELWORKS_FEATURES_ONLINE_STORE = request.param
    monkeypatch.setattr(online.online_store, "_value", None)
    yield online.online_store()
    monkeypatch.setattr(online.online_store, "_value", None)


@pytest.fixture
def vitals(db) -> FeatureView:
    definitions_apply(entities=[PATIENT], views=[VITALS])
    view = FeatureView.objects.select_related("entity").get(name="vitals")
    # Its online hash starts empty, whatever an earlier test (or a process on a copy of this database) left in Redis.
    redis.Redis.from_url(settings.REDIS_URL).delete(online.redis_key(view))
    return view


def ago(**delta) -> str:
    return (timezone.now() - timedelta(**delta)).isoformat()


@pytest.fixture
def worker(tmp_path):
    """`celery worker` on its own queue against the test database and Redis; stopped (TERM, then KILL) afterwards."""
    queue = f"test-{uuid.uuid4().hex[:8]}"
    yield from _worker(tmp_path, ["-Q", queue], queue)


@pytest.fixture
def default_queue_worker(tmp_path):
    """`celery worker` on the default queue (what services queue to) of this test worker's own Redis database."""
    yield from _worker(tmp_path, [], tmp_path / "worker.log")


def _worker(tmp_path, queue_args: list[str], answer):
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "DEBUG": "1",
    }
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", *queue_args, "--loglevel", "INFO"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    yield answer
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()
