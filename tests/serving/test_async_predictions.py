"""Asynchronous predictions end to end: the ASGI front (as deployed) answers 202, a real Celery worker on its own
queue answers the request as the synchronous endpoint would, the caller polls it or receives a signed callback.
Real Postgres, Redis and worker; the callback's receiver is a real local HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from serving.asynchronous import async_predictions_purge
from serving.models import AsyncPrediction, AsyncStatus, PredictionLog
from serving.prediction_log import prediction_log
from serving.tokens import user_token_create
from tests.serving.conftest import make_key, post, rows_of
from tests.serving.test_front import call, predict_body
from tests.webhook_receiver import HookReceiver

CLIENT_PACKAGE = Path(__file__).resolve().parents[2] / "modelworks_client"
if str(CLIENT_PACKAGE) not in sys.path:  # the client is its own package; the suite uses this repo's copy of it
    sys.path.insert(0, str(CLIENT_PACKAGE))

from modelworks_client import Client as ModelworksClient  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]
URL = "/api/v1/models/cancer/predict"
QUEUE = f"async-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def shared_artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(autouse=True)
def artifact_root(settings, shared_artifacts):
    """The worker loads models from the same folder as the test stores them in (one per module: one worker)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                      "OPTIONS": {"location": str(shared_artifacts)}},
    }  # fmt: skip
    return shared_artifacts


@pytest.fixture(autouse=True)
def async_settings(settings):
    settings.MODELWORKS_ASYNC_QUEUE = QUEUE
    settings.MODELWORKS_PREDICTION_CACHE = False  # as in the worker: a cached answer says "cached": [true]


@pytest.fixture(autouse=True)
def processor_lets_go_of_the_database():
    from serving.front import request_processor

    yield
    request_processor().close_connections()


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, shared_artifacts, tmp_path_factory):
    """`celery worker` consuming only this module's asynchronous-predictions queue; TERM (then KILL) afterwards."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": django_settings.REDIS_URL, "ARTIFACT_ROOT": str(shared_artifacts), "DEBUG": "1",
        "MODELWORKS_ASYNC_QUEUE": QUEUE, "MODELWORKS_PREDICTION_CACHE": "0",
        "MODELWORKS_WEBHOOK_ATTEMPTS": "3", "MODELWORKS_WEBHOOK_BACKOFF_MS": "200",
        "MODELWORKS_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",  # the local receiver
    }  # fmt: skip
    path = tmp_path_factory.mktemp("worker") / "worker.log"
    log = path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-Q", QUEUE, "--loglevel", "INFO",
         "--without-mingle", "--without-gossip"],  # no waiting for other workers at start
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    yield path
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def submit(key: str, body: dict, **headers: str) -> tuple[int, dict, dict]:
    data = json.dumps(body).encode()
    sent = {"Authorization": f"Api-Key {key}", "Content-Length": str(len(data)), **headers}  # as HTTP clients send
    status, answer_headers, content = call("POST", URL, data, sent)
    return status, answer_headers, json.loads(content)


def finished(client: Client, location: str, worker_log: Path, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(location)
        assert answer.status_code == 200, answer.content
        if answer.json()["status"] in (AsyncStatus.SUCCEEDED, AsyncStatus.FAILED):
            return answer.json()
        time.sleep(0.05)
    raise AssertionError(f"not finished in {timeout} s: {worker_log.read_text()[-3000:]}")


def test_an_async_prediction_answers_what_the_synchronous_endpoint_answers(production, logreg, worker, staff):
    key = make_key("predict:cancer")
    rows = rows_of(logreg.X_test, 5)
    status, _, sync = call("POST", URL, predict_body(rows), {"Authorization": f"Api-Key {key}", "X-Request-ID": "s1"})
    assert status == 200
    status, headers, queued = submit(key, {"instances": rows}, Prefer="respond-async", **{"X-Request-ID": "a1"})
    assert status == 202, queued
    assert headers["location"] == queued["location"] == f"/api/v1/predictions/{queued['id']}"
    assert queued["status"] == "queued" and queued["request_id"] == "a1" and "callback_secret" not in queued
    owner = Client(HTTP_AUTHORIZATION=f"Api-Key {key}")
    done = finished(owner, queued["location"], worker)
    assert done["status"] == "succeeded" and done["status_code"] == 200, done["answer"]
    assert done["answer"] == {**json.loads(sync), "request_id": "a1"}  # the same answer, under its own request id
    prediction_log().flush()
    logged = PredictionLog.objects.get(request_id="a1")
    assert (logged.route_reason, logged.outcome) == ("alias:production", "ok")
    assert logged.caller == PredictionLog.objects.get(request_id="s1").caller

    # An "async" field does the same; bad input fails the job with the synchronous 400, detail and errors alike.
    bad = [{**rows[0], "mean radius": "wide"}]
    _, _, sync_error = call("POST", URL, predict_body(bad), {"Authorization": f"Api-Key {key}"})
    status, _, queued_bad = submit(key, {"instances": bad, "async": True})
    assert status == 202, queued_bad
    failed = finished(owner, queued_bad["location"], worker)
    assert failed["status"] == "failed" and failed["status_code"] == 400
    assert failed["answer"] == json.loads(sync_error) and failed["answer"]["errors"][0]["field"] == "mean radius"

    # Only the caller that asked, or an admin, sees it; anyone else gets an unknown id's 404.
    assert Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('predict:cancer')}").get(queued["location"]).status_code == 404
    admin = Client(HTTP_AUTHORIZATION=f"Token {user_token_create(user=staff)[1]}")
    assert admin.get(queued["location"]).json()["answer"] == done["answer"]
    assert Client().get(queued["location"]).status_code == 401
    assert owner.get(f"/api/v1/predictions/{uuid.uuid4()}").status_code == 404

    # Results expire MODELWORKS_ASYNC_RESULT_TTL_S after they are ready: 410, then beat deletes them (404).
    row = AsyncPrediction.objects.get(pk=queued["id"])
    assert row.expires_at - row.finished_at == timedelta(seconds=django_settings.MODELWORKS_ASYNC_RESULT_TTL_S)
    later = timezone.now() + timedelta(seconds=django_settings.MODELWORKS_ASYNC_RESULT_TTL_S + 60)
    AsyncPrediction.objects.filter(pk=row.pk).update(expires_at=timezone.now())  # as if that long had passed
    gone = owner.get(queued["location"])
    assert gone.status_code == 410 and "expired" in gone.json()["detail"]
    assert async_predictions_purge(now=later) == {"failed": 0, "deleted": 2}  # and the failed one's
    missing = owner.get(queued["location"])
    assert missing.status_code == 404 and "deleted" in missing.json()["detail"]


def test_the_callback_arrives_signed_after_a_retry(production, logreg, worker, live_server):
    """Sent by the Python client over real HTTP, as a notebook would."""
    receiver = HookReceiver(failures=1)  # the first attempt gets a 500: retried from the queue
    try:
        key = make_key("predict:cancer")
        mw = ModelworksClient(live_server.url, token=key)
        job = mw.predict("cancer", logreg.X_test.head(2), wait=False, callback_url=receiver.url)
        queued = {"callback_secret": job.callback_secret, "location": f"/api/v1/predictions/{job.id}", "id": job.id}
        frame = mw.prediction_frame(job.id, timeout=30)
        assert list(frame["prediction"]) == list(logreg.estimator.predict(logreg.X_test.head(2)))
        assert frame.attrs["request_ids"] == [job.request_id]
        deadline = time.monotonic() + 30
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(receiver.received) == 2, worker.read_text()[-3000:]
        first, second = receiver.received
        assert first.headers["webhook-id"] == second.headers["webhook-id"]  # one message, attempted twice
        # Verified as a receiver would (Standard Webhooks), with the secret shown once at submission
        secret = base64.b64decode(queued["callback_secret"].removeprefix("whsec_"))
        signed = f"{second.headers['webhook-id']}.{second.headers['webhook-timestamp']}.".encode() + second.body
        expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
        assert second.headers["webhook-signature"] == f"v1,{expected}"
        message = json.loads(second.body)
        polled = Client(HTTP_AUTHORIZATION=f"Api-Key {key}").get(queued["location"]).json()
        assert message["type"] == "prediction.finished" and message["data"]["answer"] == polled["answer"]
        assert message["data"]["status"] == "succeeded" and len(message["data"]["answer"]["predictions"]) == 2
        deadline = time.monotonic() + 10
        while AsyncPrediction.objects.get(pk=queued["id"]).callback_status != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert polled["callback"]["url"] == f"http://127.0.0.1:{receiver.port}/…"  # never the path's token
    finally:
        receiver.close()


@pytest.mark.django_db
def test_submission_refuses_what_no_queue_can_fix(production, logreg):
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('predict:cancer')}")
    rows = rows_of(logreg.X_test, 1)
    refused = post(client, URL, {"instances": rows, "callback_url": "http://169.254.169.254/latest"},
                   HTTP_PREFER="respond-async")  # fmt: skip
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "callback_url"
    assert post(client, URL, {"instances": rows, "async": "yes"}).status_code == 400
    other = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('predict:other')}")
    assert post(other, URL, {"instances": rows}, HTTP_PREFER="respond-async").status_code == 403
    answer = post(client, URL, {"instances": rows, "async": False})  # false: answered synchronously
    assert answer.status_code == 200 and answer.json()["predictions"]
    assert not AsyncPrediction.objects.exists()


@pytest.mark.django_db
def test_a_request_left_in_the_queue_fails_and_its_caller_is_told(settings):
    created = timezone.now() - timedelta(seconds=settings.MODELWORKS_ASYNC_QUEUE_TIMEOUT_S + 5)
    expires = timezone.now() + timedelta(hours=1)
    row = AsyncPrediction.objects.create(model_name="cancer", body=b"{}", request_id="lost", caller="key:1",
                                         created_at=created, expires_at=expires)  # fmt: skip
    assert async_predictions_purge() == {"failed": 1, "deleted": 0}
    row.refresh_from_db()
    assert (row.status, row.status_code) == ("failed", 503) and "waited" in row.answer["detail"]
