"""The prediction log: nothing lost on a clean shutdown, idempotent by request id, independent of Redis."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from serving import prediction_log
from serving.models import PredictionLog
from serving.prediction_log import PredictionLogBuffer
from tests.serving.conftest import post, rows_of

URL = "/api/v1/models/cancer/predict"


@pytest.fixture
def background_log(monkeypatch):
    """A buffer with its real background flusher, as in a web process."""
    buffer = PredictionLogBuffer(flush_seconds=0.05, max_rows=100_000, batch_rows=50)
    monkeypatch.setattr(prediction_log.prediction_log, "_value", buffer)
    return buffer


@pytest.mark.django_db(transaction=True)
def test_every_prediction_under_concurrency_is_in_the_log_after_shutdown(production, logreg, key, background_log):
    rows = rows_of(logreg.X_test, 50)
    sent: list[str] = []

    def client_thread(n: int) -> None:
        client = Client(HTTP_AUTHORIZATION=f"Api-Key {key}")
        try:
            for i in range(40):
                response = post(client, URL, {"instances": [rows[(n + i) % 50]]})
                assert response.status_code == 200
                sent.append(response.json()["request_id"])
        finally:
            connection.close()

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    background_log.close()  # what a clean shutdown does
    assert len(sent) == 320
    assert PredictionLog.objects.count() == 320
    assert set(PredictionLog.objects.values_list("request_id", flat=True)) == set(sent)


@pytest.mark.django_db(transaction=True)
def test_a_retried_request_id_is_logged_once(caller, production, logreg):
    for _ in range(3):
        post(caller, URL, {"instances": rows_of(logreg.X_test, 1)}, HTTP_X_REQUEST_ID="retry-7")
    prediction_log.prediction_log().flush()
    assert PredictionLog.objects.filter(request_id="retry-7").count() == 1


@pytest.mark.django_db(transaction=True)
def test_rows_survive_a_failed_flush_and_are_written_on_the_next(caller, production, logreg, monkeypatch):
    buffer = prediction_log.prediction_log()
    post(caller, URL, {"instances": rows_of(logreg.X_test, 1)})
    original = prediction_log.insert

    def database_down(*args, **kwargs):
        raise ConnectionError("database is away")

    monkeypatch.setattr(prediction_log, "insert", database_down)
    assert buffer.flush() == 0 and len(buffer) == 1
    monkeypatch.setattr(prediction_log, "insert", original)
    assert buffer.flush() == 1 and PredictionLog.objects.count() == 1


@pytest.mark.django_db
def test_predictions_work_and_are_logged_while_redis_is_down(caller, production, logreg, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    response = post(caller, URL, {"instances": rows_of(logreg.X_test, 2)})
    assert response.status_code == 200 and response.json()["cached"] == [False, False]
    prediction_log.prediction_log().flush()
    assert PredictionLog.objects.filter(request_id=response.json()["request_id"]).exists()


@pytest.mark.django_db
def test_prune_deletes_only_old_predictions(caller, production, logreg, capsys):
    post(caller, URL, {"instances": rows_of(logreg.X_test, 1)})
    prediction_log.prediction_log().flush()
    PredictionLog.objects.create(
        request_id="ancient", model_name="cancer", version=1, inputs=[], outputs={}, latency_ms=1, route_reason="x",
        created_at=timezone.now() - timedelta(days=40),
    )  # fmt: skip
    call_command("prune_predictions", "--older-than", "30d")
    assert "deleted 1 predictions" in capsys.readouterr().out
    assert PredictionLog.objects.count() == 1 and not PredictionLog.objects.filter(request_id="ancient").exists()
