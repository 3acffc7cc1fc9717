"""Ground truth by request id or routing key: idempotent, late arrivals joined, quality equal to sklearn's."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone
from sklearn import metrics as skm

from monitoring.models import Feedback
from monitoring.selectors import quality_metrics
from monitoring.services.feedback import feedback_join_pending
from serving.models import PredictionLog
from tests.monitoring.conftest import backdate, flush, predict_each, rows


def _post(api, body):
    return api.post("/api/v1/feedback", body, format="json")


@pytest.mark.django_db
def test_classifier_quality_equals_sklearn_on_the_logged_predictions(api, cancer_v1, logreg):
    X, y = logreg.X_test.iloc[:60], logreg.y_test.iloc[:60].tolist()
    ids = predict_each("cancer", rows(X))
    flush()
    response = _post(api, {"items": [{"request_id": r, "actual": a} for r, a in zip(ids, y, strict=True)]})
    assert response.status_code == 202, response.json()
    assert response.json() == {"received": 60}

    quality = quality_metrics("cancer", 1)
    predicted = logreg.estimator.predict(X.to_numpy())
    scores = logreg.estimator.predict_proba(X.to_numpy())[:, 1]
    assert quality["n"] == 60
    assert quality["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-12)
    assert quality["precision"] == pytest.approx(skm.precision_score(y, predicted), abs=1e-12)
    assert quality["recall"] == pytest.approx(skm.recall_score(y, predicted), abs=1e-12)
    assert quality["f1"] == pytest.approx(skm.f1_score(y, predicted), abs=1e-12)
    assert quality["roc_auc"] == pytest.approx(skm.roc_auc_score(y, scores), abs=1e-9)
    assert feedback_join_pending() == 60  # the task queued after the request
    row = Feedback.objects.get(request_id=ids[0])
    assert (row.model_name, row.version, row.joined_at is not None) == ("cancer", 1, True)


@pytest.mark.django_db
def test_regressor_quality_equals_sklearn_and_a_time_window_selects_predictions(api, diabetes_v1, ridge):
    X, y = ridge.X_test.iloc[:40], ridge.y_test.iloc[:40].tolist()
    ids = predict_each("diabetes", rows(X))
    flush()
    backdate(ids[:10], timezone.now() - timedelta(days=2))
    _post(api, [{"request_id": r, "actual": a} for r, a in zip(ids, y, strict=True)])

    predicted = ridge.estimator.predict(X.to_numpy())
    recent = quality_metrics("diabetes", 1, since=timezone.now() - timedelta(days=1))
    assert recent["n"] == 30
    assert recent["mae"] == pytest.approx(skm.mean_absolute_error(y[10:], predicted[10:]), rel=1e-9)
    assert recent["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y[10:], predicted[10:])), rel=1e-9)
    assert recent["r2"] == pytest.approx(skm.r2_score(y[10:], predicted[10:]), rel=1e-9)
    old = quality_metrics("diabetes", 1, until=timezone.now() - timedelta(days=1))
    assert old["n"] == 10
    assert old["mae"] == pytest.approx(skm.mean_absolute_error(y[:10], predicted[:10]), rel=1e-9)


@pytest.mark.django_db
def test_the_post_stores_feedback_and_queues_the_join_after_commit_instead_of_joining_inline(
    api, cancer_v1, logreg, django_capture_on_commit_callbacks
):
    ids = predict_each("cancer", rows(logreg.X_test, 0, 3))
    flush()
    with django_capture_on_commit_callbacks() as queued:  # not run: the test checks the request itself
        response = _post(api, [{"request_id": r, "actual": 1} for r in ids])
    assert response.status_code == 202 and response.json() == {"received": 3}
    assert Feedback.objects.count() == 3
    assert not Feedback.objects.filter(joined_at__isnull=False).exists(), "the request joined inline"
    assert len(queued) == 1  # one join task per request, queued once the feedback is committed
    assert quality_metrics("cancer", 1)["n"] == 3  # reads pair by request id whether or not the join ran
    assert feedback_join_pending() == 3  # what the queued task (and beat's schedule) runs
    assert set(Feedback.objects.values_list("model_name", "version")) == {("cancer", 1)}


@pytest.mark.django_db
def test_feedback_before_the_log_is_flushed_joins_when_it_lands(api, cancer_v1, logreg):
    ids = predict_each("cancer", rows(logreg.X_test, 0, 5))
    assert PredictionLog.objects.count() == 0
    assert _post(api, [{"request_id": r, "actual": 1} for r in ids]).json() == {"received": 5}
    assert quality_metrics("cancer", 1)["n"] == 0
    flush()
    assert quality_metrics("cancer", 1)["n"] == 5  # joined on read already
    assert feedback_join_pending() == 5
    assert set(Feedback.objects.values_list("model_name", "version")) == {("cancer", 1)}


@pytest.mark.django_db
def test_feedback_is_idempotent_and_a_repeat_corrects_the_value(api, cancer_v1, logreg):
    (request_id,) = predict_each("cancer", rows(logreg.X_test, 0, 1))
    flush()
    for _ in range(3):
        _post(api, {"request_id": request_id, "actual": 0})
    _post(api, {"items": [{"request_id": request_id, "actual": 1}, {"request_id": request_id, "actual": 1}]})
    assert Feedback.objects.count() == 1
    assert Feedback.objects.get().actual == 1
    assert quality_metrics("cancer", 1)["n"] == 1


@pytest.mark.django_db
def test_feedback_by_routing_key_and_time_finds_the_latest_earlier_prediction(api, cancer_v1, logreg):
    now = timezone.now()
    first = predict_each("cancer", rows(logreg.X_test, 0, 1), keys=["user-7"])
    second = predict_each("cancer", rows(logreg.X_test, 1, 1), keys=["user-7"])
    flush()
    backdate(first, now - timedelta(hours=3))
    backdate(second, now - timedelta(hours=1))
    body = {"routing_key": "user-7", "time": (now - timedelta(hours=2)).isoformat(), "actual": 0}
    _post(api, body)
    _post(api, body)  # idempotent
    assert list(Feedback.objects.values_list("request_id", "routing_key")) == [(first[0], "user-7")]


@pytest.mark.django_db
def test_feedback_by_routing_key_for_a_prediction_not_yet_logged_is_joined_later(api, cancer_v1, logreg):
    _post(api, {"routing_key": "user-9", "model": "cancer", "actual": 1})
    pending = Feedback.objects.get()
    assert pending.request_id is None
    (request_id,) = predict_each("cancer", rows(logreg.X_test, 0, 1), keys=["user-9"])
    flush()
    backdate([request_id], pending.observed_at - timedelta(seconds=5))
    assert feedback_join_pending() == 1
    assert Feedback.objects.get().request_id == request_id
    assert quality_metrics("cancer", 1)["n"] == 1


@pytest.mark.django_db
def test_a_monitor_run_leaves_the_join_to_its_one_schedule(api, cancer_v1, logreg):
    from monitoring.services.monitors import monitor_create, monitor_run

    _post(api, {"routing_key": "user-9", "model": "cancer", "actual": 1})
    pending = Feedback.objects.get()
    (request_id,) = predict_each("cancer", rows(logreg.X_test, 0, 1), keys=["user-9"])
    flush()
    backdate([request_id], pending.observed_at - timedelta(seconds=5))
    monitor_run(monitor=monitor_create(model=cancer_v1.model, name="m", window_hours=1))
    assert Feedback.objects.get().request_id is None  # not joined by the run: beat's `monitoring-join-feedback` does
    assert feedback_join_pending() == 1


@pytest.mark.django_db
def test_a_batched_request_takes_one_actual_per_row(api, cancer_v1, logreg):
    from serving import services as serving

    result = serving.predict(model_name="cancer", payload={"instances": rows(logreg.X_test, 0, 3)}, alias="production")
    other = predict_each("cancer", rows(logreg.X_test, 3, 1))
    flush()
    _post(api, [{"request_id": result.request_id, "actual": [0, 1, 1]}, {"request_id": other[0], "actual": [0, 1]}])
    quality = quality_metrics("cancer", 1)
    assert (quality["n"], quality["requests_mismatched"]) == (3, 1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": [{"actual": 1}]}, "request_id"),
        ({"items": [{"request_id": "r1"}]}, "actual"),
        ({"items": [{"request_id": "r1", "actual": {"a": 1}}]}, "actual"),
        ({"items": [{"request_id": "r1", "actual": 1, "time": "yesterday"}]}, "time"),
        ({"items": []}, "items"),
    ],
)
def test_bad_feedback_is_a_400_naming_the_field(api, body, field):
    response = _post(api, body)
    assert response.status_code == 400
    assert field in str(response.json())
    assert Feedback.objects.count() == 0


@pytest.mark.django_db
def test_feedback_needs_authentication(client):
    assert client.post("/api/v1/feedback", {"request_id": "x", "actual": 1}).status_code in (401, 403)
