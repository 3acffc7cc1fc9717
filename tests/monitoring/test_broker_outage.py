"""Queueing a task from a request, with the broker hung (SIGSTOP of the test's own Redis), against the web process as
deployed (gunicorn with the ASGI front): the request answers within a bounded wait, 503 with Retry-After when the
task itself could not be queued, and a run that committed its alert keeps it (and says the webhook was not queued);
feedback is stored and answered 202 though its join task could not be queued."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from django.db import connection

from config.api import exception_handler
from config.queueing import TaskNotQueued
from monitoring.models import Alert, Feedback
from monitoring.services.monitors import monitor_create
from serving.tokens import user_token_create
from tests.monitoring.conftest import flush, predict_each, rows, shifted
from tests.platform.envnames import ROOT
from tests.platform.instances import own_redis, running_web
from tests.platform.processes import request, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def _not_queued(port: int, task: str) -> float:
    content = request(port, "GET", "/metrics")[2].decode()
    prefix = f'modelworks_tasks_not_queued_total{{task="{task}"}} '
    return sum(float(line.removeprefix(prefix)) for line in content.splitlines() if line.startswith(prefix))


def test_a_hung_broker_answers_503_with_retry_after_and_keeps_the_alert(
    cancer_v1, logreg, receiver, user, artifact_root, tmp_path
):
    monitor = monitor_create(model=cancer_v1.model, name="hourly", window_hours=1, webhook_url=receiver.url)
    predict_each("cancer", rows(shifted(logreg.X_test)))
    flush()
    headers = {"Authorization": f"Token {user_token_create(user=user)[1]}", "Content-Type": "application/json"}
    run = f"/api/v1/monitors/{monitor.pk}/run"
    web = {"var": tmp_path / "web", "artifact_root": artifact_root, "database_url": _database_url()}
    with own_redis() as broker, running_web(**web, redis_url=broker.url) as port:
        status, _, body = request(port, "POST", run, b'{"wait": false}', headers)
        assert status == 202, body  # the broker answers: queued
        broker.pause()
        try:
            started = time.monotonic()
            status, answer_headers, body = request(port, "POST", run, b'{"wait": false}', headers)
            queued_in = time.monotonic() - started
            assert status == 503, body
            assert {k.lower(): v for k, v in answer_headers.items()}["retry-after"] == "5"
            assert "task queue is unavailable" in json.loads(body)["detail"]

            # The run in the request commits its report and alert; the webhook queued after the commit fails
            # within the bound, the answer is still the report, and the alert says its webhook was not queued.
            status, _, body = request(port, "POST", run, b'{"wait": true}', headers)
            assert status == 201, body
            assert json.loads(body)["dataset_drift"] is True
            alert = Alert.objects.get()
            assert alert.open and alert.webhook_status.startswith("firing: not queued")
            assert _not_queued(port, "monitoring.run_monitor") == 1
            assert _not_queued(port, "monitoring.deliver_webhook") == 1

            # Feedback is stored and answered; only its join task is not queued (beat's schedule joins it later).
            status, _, body = request(port, "POST", "/api/v1/feedback", b'{"request_id": "r-1", "actual": 1}', headers)
            assert status == 202 and json.loads(body) == {"received": 1}, body
            assert Feedback.objects.filter(request_id="r-1", joined_at__isnull=True).exists()
            assert _not_queued(port, "monitoring.join_feedback") == 1
        finally:
            broker.resume()
        # Back: the same worker queues again (its broker connection recovered).
        wait_for(lambda: request(port, "POST", run, b'{"wait": false}', headers)[0] == 202, 10, "queueing again")
    print(f"a task not queued answered in {queued_in:.2f} s")


@pytest.mark.parametrize("process", ["web", "other"])
def test_only_web_processes_get_the_short_broker_timeouts(process):
    """A worker blocks on the broker for seconds by design (BRPOP): the web's 0.5 s socket timeout is not for it."""
    probe = (
        "import django, json; django.setup(); from config.celery import app; c = app.conf; "
        "print(json.dumps([c.broker_transport_options, c.task_publish_retry_policy, type(app.backend).__name__]))"
    )
    environment = {**os.environ, "MODELWORKS_PROCESS": process, "DJANGO_SETTINGS_MODULE": "config.settings",
                   "REDIS_URL": "redis://127.0.0.1:6379/10"}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=environment, capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    transport, retry_policy, backend = json.loads(result.stdout.splitlines()[-1])
    if process == "web":
        assert transport == {"socket_timeout": 0.5, "socket_connect_timeout": 0.5, "max_retries": 1}
        assert retry_policy["max_retries"] == 1 and backend == "WebRedisBackend"
    else:
        assert transport == {} and retry_policy["max_retries"] == 3 and backend == "RedisBackend"


def test_any_api_view_that_cannot_queue_its_task_answers_503_with_retry_after():
    response = exception_handler(TaskNotQueued("monitoring.run_monitor", TimeoutError("Timeout reading")), {})
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert "monitoring.run_monitor not queued" in response.data["detail"]
