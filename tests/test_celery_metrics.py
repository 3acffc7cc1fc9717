"""A real prefork worker exports its tasks and its queue depth for Prometheus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from registry.tasks import verify_all_artifacts
from tests.platform.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
SUCCESS = 'state="SUCCESS",task="registry.verify_all_artifacts"'


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("modelworks_celery") and " " in line:
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


@pytest.mark.django_db(transaction=True)
def test_a_prefork_worker_exports_task_counts_durations_and_queue_depth(tmp_path, artifact_root):
    db = connection.settings_dict
    consumed, waiting, port = f"work-{uuid.uuid4().hex[:8]}", f"idle-{uuid.uuid4().hex[:8]}", free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL, "ARTIFACT_ROOT": str(artifact_root), "DEBUG": "1",
        "MODELWORKS_CELERY_QUEUE": waiting,  # the default queue: nobody consumes it in this test
        "MODELWORKS_WORKER_METRICS_PORT": str(port), "MODELWORKS_WORKER_METRICS_ADDR": "127.0.0.1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }  # fmt: skip
    (tmp_path / "metrics").mkdir()  # as the deployments mount it: it must exist before the worker starts
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--concurrency", "2", "-Q", consumed],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        results = [verify_all_artifacts.apply_async(queue=consumed) for _ in range(4)]
        assert [r.get(timeout=90) for r in results] == [{"checked": 0, "failed": 0}] * 4
        for _ in range(3):
            verify_all_artifacts.apply_async(queue=waiting)
        deadline = time.monotonic() + 30
        while True:
            try:
                samples = scrape(port)
                if samples.get(f"modelworks_celery_tasks_total{{{SUCCESS}}}") == 4:
                    break
            except OSError:
                samples = {}
            assert time.monotonic() < deadline, f"metrics never showed 4 tasks: {samples}"
            time.sleep(0.2)
        # Counted in the two prefork children, merged by the main process.
        assert samples['modelworks_celery_task_seconds_count{task="registry.verify_all_artifacts"}'] == 4
        assert samples[f'modelworks_celery_queue_length{{queue="{waiting}"}}'] == 3
        assert samples[f'modelworks_celery_queue_length{{queue="{consumed}"}}'] == 0
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
