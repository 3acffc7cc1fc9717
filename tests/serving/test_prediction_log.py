"""The prediction log: nothing lost on a clean shutdown, idempotent by request id, independent of Redis."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from serving import prediction_log
from serving.models import PredictionLog
from serving.prediction_log import LogEntry, PredictionLogBuffer
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


@pytest.mark.django_db
@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    # Lone surrogates (category Cs) are not text UTF-8 can hold: such rows are dead letters (test_dead_letters.py).
    routing_key=st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    category=st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=20),
    number=st.floats(allow_nan=False, allow_infinity=False),
)
def test_any_text_round_trips_through_the_log_write(routing_key, category, number):
    """COPY's text format escapes tabs, newlines and backslashes: whatever a client sends is stored as sent (NUL,
    which Postgres text cannot hold, is dropped from the routing key)."""
    request_id = f"prop-{uuid.uuid4().hex}"
    entry = LogEntry(request_id, "cancer", 1, routing_key, [{"colour": category, "size": number}],
                     {"predictions": [category]}, 1.25, False, "alias:production", "ok", timezone.now())  # fmt: skip
    prediction_log.insert([entry])
    stored = PredictionLog.objects.get(request_id=request_id)
    assert stored.routing_key == routing_key.replace("\x00", "")
    (inputs,) = stored.inputs
    assert inputs["colour"] == category and stored.outputs == {"predictions": [category]}
    assert float(inputs["size"]) == number  # jsonb keeps numbers as decimals: 4.6e16 comes back as an int


@pytest.mark.django_db
def test_a_batch_holding_an_id_already_stored_still_writes_the_others():
    def entry(request_id: str) -> LogEntry:
        return LogEntry(request_id, "cancer", 1, "", [], {}, 1.0, False, "alias:production", "ok", timezone.now())

    prediction_log.insert([entry("a"), entry("b")])
    prediction_log.insert([entry("b"), entry("c")])  # "b" again: a client's retry landing in a later flush
    assert sorted(PredictionLog.objects.values_list("request_id", flat=True)) == ["a", "b", "c"]
