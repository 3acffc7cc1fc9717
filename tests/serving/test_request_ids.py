"""Idempotence belongs to retries of the same request: a client reusing a request id for other requests keeps every
prediction in the log (and in rollout analysis and feedback), while a retried identical request logs once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import Feedback
from monitoring.selectors import joined_feedback
from monitoring.services.feedback import FeedbackItem, feedback_join_pending, feedback_record
from serving import prediction_log
from serving.models import PredictionLog
from serving.prediction_log import LogEntry
from tests.serving.conftest import post, rows_of

URL = "/api/v1/models/cancer/predict"


def flush() -> int:
    return prediction_log.prediction_log().flush()


@pytest.mark.django_db
def test_twenty_predicts_reusing_one_request_id_with_different_inputs_are_twenty_rows(caller, production, logreg):
    for row in rows_of(logreg.X_test, 20):
        assert post(caller, URL, {"instances": [row]}, HTTP_X_REQUEST_ID="reused-1").status_code == 200
    flush()
    assert PredictionLog.objects.filter(request_id="reused-1").count() == 20


@pytest.mark.django_db
def test_twenty_retries_of_one_identical_request_are_one_row(caller, production, logreg):
    body = {"instances": rows_of(logreg.X_test, 2)}
    for i in range(20):
        assert post(caller, URL, body, HTTP_X_REQUEST_ID="retry-1").status_code == 200
        if i % 7 == 0:
            flush()  # retries land in one flush or in later ones alike
    flush()
    assert PredictionLog.objects.filter(request_id="retry-1").count() == 1


@pytest.mark.django_db
def test_v2_infers_with_the_same_body_id_and_different_inputs_are_one_row_each(caller, production, logreg):
    X = logreg.X_test.head(20).to_numpy()
    for row in X:
        body = {"id": "1", "inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": row.tolist()}]}
        response = post(caller, "/v2/models/cancer/infer", body)
        assert response.status_code == 200 and response.json()["id"] == "1"
    flush()
    assert PredictionLog.objects.filter(request_id="1", model_name="cancer").count() == 20


def entry(at, outcome: str = "ok", inputs=None) -> LogEntry:
    return LogEntry("same-id", "cancer", 1, "", inputs or [{"x": 1.0}], {"predictions": [0]}, 1.0, False,
                    "alias:production", outcome, at)  # fmt: skip


@pytest.mark.django_db
def test_the_same_request_is_one_row_within_the_retry_window_and_a_new_one_after(settings):
    settings.MODELWORKS_LOG_RETRY_WINDOW_S = 300
    start = timezone.now().replace(minute=0, second=0, microsecond=0)
    prediction_log.insert([entry(start), entry(start + timedelta(seconds=30))])
    prediction_log.insert([entry(start + timedelta(seconds=60))])  # a flush retried later
    assert PredictionLog.objects.filter(request_id="same-id").count() == 1
    # A client sending one id and one body all day is not a retry: one row per window, never out of the log.
    prediction_log.insert([entry(start + timedelta(hours=1)), entry(start + timedelta(hours=2))])
    # A retry that failed (503, logged "error") and then succeeded is two answers.
    prediction_log.insert([entry(start, outcome="error")])
    assert PredictionLog.objects.filter(request_id="same-id").count() == 4


@pytest.mark.django_db
def test_feedback_for_a_reused_id_attaches_to_the_latest_prediction_of_that_model(caller, production, logreg):
    rows = rows_of(logreg.X_test, 16)
    ids = [f"shared-{i}" for i in range(8)]  # eight ids: no pairing that is right only by chance passes
    latest = {}
    for i, request_id in enumerate(ids):
        body = {"instances": [rows[2 * i], rows[2 * i + 1]]}
        latest[request_id] = post(caller, URL, body, HTTP_X_REQUEST_ID=request_id).json()["predictions"]
    flush()
    # Earlier requests under the same ids, logged afterwards (another worker's flusher ran later).
    for i, request_id in enumerate(ids):
        post(caller, URL, {"instances": [rows[i]]}, HTTP_X_REQUEST_ID=request_id)
    flush()
    PredictionLog.objects.filter(
        id__in=[PredictionLog.objects.filter(request_id=r).latest("id").pk for r in ids]
    ).update(created_at=timezone.now() - timedelta(minutes=5))
    assert PredictionLog.objects.filter(request_id__in=ids).count() == 16
    assert feedback_record(items=[FeedbackItem(request_id=r, actual=[1, 0]) for r in ids]) == {"received": 8}
    assert feedback_join_pending() == 8  # the task feedback_record queues after commit
    assert set(Feedback.objects.values_list("model_name", flat=True)) == {"cancer"}
    joined = joined_feedback("cancer", 1)  # each paired once, with the two-row request made last under its id
    assert joined.mismatched == 0 and joined.actual == [1, 0] * 8
    assert sorted(joined.predicted) == sorted(p for r in ids for p in latest[r])


@pytest.mark.django_db
def test_feedback_naming_its_model_joins_that_models_prediction_under_a_shared_id(production, logreg):
    made = timezone.now() - timedelta(minutes=1)
    for model, version, at in (("cancer", 1, made), ("other", 7, made + timedelta(seconds=10))):
        prediction_log.insert([LogEntry("shared", model, version, "k", [{"x": 1.0}], {"predictions": [1]}, 1.0,
                                        False, "alias:production", "ok", at)])  # fmt: skip
    feedback_record(items=[FeedbackItem(request_id="shared", model="cancer", actual=1)])
    feedback_join_pending()
    assert Feedback.objects.values_list("model_name", "version").get() == ("cancer", 1)
    assert joined_feedback("cancer", 1).actual == [1] and joined_feedback("other", 7).actual == []


@pytest.mark.django_db
def test_feedback_joins_the_version_of_the_latest_prediction_whatever_order_the_log_was_written_in(production):
    now = timezone.now()
    ids = [f"shared-{i}" for i in range(8)]
    for version, at in ((2, now), (1, now - timedelta(minutes=5))):  # the latest request is logged first
        prediction_log.insert([LogEntry(r, "cancer", version, "k", [{"x": float(version)}], {"predictions": [1]}, 1.0,
                                        False, "alias:production", "ok", at) for r in ids])  # fmt: skip
    feedback_record(items=[FeedbackItem(request_id=r, actual=1) for r in ids])
    feedback_join_pending()
    assert list(Feedback.objects.values_list("version", flat=True).distinct()) == [2]
    assert joined_feedback("cancer", 2).actual == [1] * 8 and joined_feedback("cancer", 1).actual == []


@pytest.mark.django_db
def test_a_shadow_pairs_with_the_primary_of_its_own_request_under_a_reused_id(production, logreg):
    from registry import services as registry
    from rollouts import services as rollouts
    from rollouts.selectors import shadow_comparison

    candidate = registry.model_version_register(
        model=production.model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    rollout = rollouts.rollout_start(model=production.model, candidate=candidate, mode="shadow", shadow_percent=100)
    start = timezone.now() - timedelta(minutes=1)
    rows = []
    for i, answer in enumerate([0, 1, 1, 0]):  # four requests under one id, each answered alike by both versions
        at = start + timedelta(seconds=10 * i)
        inputs, outputs = [{"x": float(i)}], {"predictions": [answer]}
        rows += [
            LogEntry("shared", "cancer", 1, "", inputs, outputs, 2.0, False, "alias:production", "ok", at),
            LogEntry("shared~shadow", "cancer", 2, "", inputs, outputs, 1.0, False, f"rollout:{rollout.pk}:shadow",
                     "shadow", at + timedelta(milliseconds=5)),
        ]  # fmt: skip
    prediction_log.insert(rows[::-1])  # logged in any order
    comparison = shadow_comparison(rollout)
    assert comparison["pairs"] == 4 and comparison["agreement"] == 1.0


@pytest.mark.django_db
def test_pods_of_the_previous_release_keep_logging_during_a_rolling_upgrade():
    """The previous release COPYs the log without retry_key: the migrated table must still take its rows."""
    import io

    from django.db import connection

    old_columns = ("request_id, model_name, version, routing_key, inputs, outputs, latency_ms, cached, route_reason,"
                   " outcome, created_at")  # fmt: skip
    row = "old-pod-1\tcancer\t1\t\t[]\t{}\t1.5\tf\talias:production\tok\t2026-12-01T00:00:00+00:00\n"
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(f"COPY serving_predictionlog ({old_columns}) FROM STDIN", io.StringIO(row))
    assert PredictionLog.objects.get(request_id="old-pod-1").retry_key == ""
