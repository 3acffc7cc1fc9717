"""A monitor run end to end: the prediction log's window against the registered reference, stored as a report."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from scipy import stats

from monitoring import webhooks
from monitoring.models import Alert, DriftReport, ReferenceDataset
from monitoring.services.monitors import monitor_create, monitor_run
from monitoring.services.references import reference_frame
from monitoring.windows import PREDICTION
from serving.models import PredictionLog
from tests.monitoring.conftest import backdate, flush, predict_each, rows, shifted, webhooks_queued


def _log(frame, model="cancer", hours_ago=None):
    ids = predict_each(model, rows(frame))
    flush()
    if hours_ago is not None:
        backdate(ids, timezone.now() - timedelta(hours=hours_ago))
    return ids


@pytest.mark.django_db
def test_a_run_compares_the_logged_window_with_the_registered_evaluation_sample(cancer_v1, logreg):
    _log(logreg.X_test)
    monitor = monitor_create(model=cancer_v1.model, name="hourly", window_hours=1)
    report = monitor_run(monitor=monitor)

    assert ReferenceDataset.objects.get(version=cancer_v1).source == "evaluation"
    assert (report.version, report.reference_rows, report.current_rows) == (1, len(logreg.X_test), len(logreg.X_test))
    names = [f["name"] for f in report.features]
    assert names == [*logreg.X_test.columns, PREDICTION]
    assert report.tested_features == 31
    assert report.dataset_drift is False and report.drifted_features == 0  # same rows as the reference
    feature = report.features[0]
    reference = reference_frame(cancer_v1)[feature["name"]]
    theirs = stats.ks_2samp(reference, logreg.X_test[feature["name"]])
    assert abs(feature["p_value"] - theirs.pvalue) <= 1e-9 and feature["test"] == "ks"
    assert report.features[-1]["test"] == "chi2"  # a classifier's predictions are categories


@pytest.mark.django_db
def test_shifted_traffic_is_dataset_drift_and_alerts_once_then_resolves(
    cancer_v1, logreg, receiver, django_capture_on_commit_callbacks
):
    monitor = monitor_create(model=cancer_v1.model, name="hourly", window_hours=1, webhook_url=receiver.url)
    _log(shifted(logreg.X_test))
    with django_capture_on_commit_callbacks() as queued:
        first = monitor_run(monitor=monitor)
    assert first.dataset_drift is True and first.drift_share >= 0.5
    assert Alert.objects.get().open
    assert len(webhooks_queued(queued)) == 1  # one webhook: "firing"

    with django_capture_on_commit_callbacks() as queued:
        second = monitor_run(monitor=monitor)  # the condition still holds: no second alert, no second webhook
    assert second.dataset_drift is True
    assert Alert.objects.count() == 1 and webhooks_queued(queued) == []

    # The shifted traffic ages out of the window; normal traffic replaces it.
    backdate(list(PredictionLog.objects.values_list("request_id", flat=True)), timezone.now() - timedelta(hours=2))
    _log(logreg.X_test)
    with django_capture_on_commit_callbacks() as queued:
        third = monitor_run(monitor=monitor)
    assert third.dataset_drift is False
    alert = Alert.objects.get()
    assert alert.resolved_at is not None and alert.last_report == third
    assert len(webhooks_queued(queued)) == 1  # one webhook: "resolved"


@pytest.mark.django_db
def test_an_alert_sends_firing_then_resolved_to_the_webhook(cancer_v1, logreg, receiver):
    monitor = monitor_create(model=cancer_v1.model, name="hourly", window_hours=1, webhook_url=receiver.url)
    _log(shifted(logreg.X_test))
    report = monitor_run(monitor=monitor)
    alert = Alert.objects.get()
    assert webhooks.webhook_send(alert=alert, status="firing") is True
    (body,) = receiver.bodies
    assert body["status"] == "firing" and body["kind"] == "dataset_drift" and body["model"] == "cancer"
    assert body["report_id"] == report.pk and body["details"]["drift_share"] == report.drift_share


@pytest.mark.django_db
def test_a_failing_webhook_attempt_asks_for_a_retry_until_the_last_and_never_raises_otherwise(
    cancer_v1, logreg, receiver
):
    """One call is one attempt (Celery re-queues the task between attempts: tests/monitoring/test_worker.py)."""
    monitor = monitor_create(model=cancer_v1.model, name="hourly", window_hours=1, webhook_url=receiver.url)
    _log(shifted(logreg.X_test))
    monitor_run(monitor=monitor)
    alert = Alert.objects.get()
    receiver.failures = 2
    for attempt in (1, 2):
        with pytest.raises(webhooks.RetryLater):
            webhooks.webhook_send(alert=alert, status="firing", attempt=attempt, attempts=3)
        assert Alert.objects.get().webhook_status == f"firing: HTTP 500 after {attempt} attempt(s), retrying"
    assert webhooks.webhook_send(alert=alert, status="firing", attempt=3, attempts=3) is True
    assert receiver.attempts == 3 and len(receiver.bodies) == 1
    assert Alert.objects.get().webhook_status == "firing: HTTP 200 after 3 attempt(s)"

    receiver.close()  # nobody listening any more: the last attempt gives up and says why
    assert webhooks.webhook_send(alert=alert, status="resolved", attempt=2, attempts=2) is False
    assert Alert.objects.get().webhook_status == "resolved: connection failed after 2 attempt(s)"


@pytest.mark.django_db
def test_a_webhook_refused_with_a_4xx_is_not_retried(cancer_v1, logreg):
    import http.server
    import threading

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server API)
            self.send_response(422)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        monitor = monitor_create(model=cancer_v1.model, name="hourly", window_hours=1, webhook_url=url)
        _log(shifted(logreg.X_test))
        monitor_run(monitor=monitor)
        alert = Alert.objects.get()
        assert webhooks.webhook_send(alert=alert, status="firing", attempt=1, attempts=5) is False
        assert Alert.objects.get().webhook_status == "firing: HTTP 422 after 1 attempt(s)"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.django_db
def test_quality_thresholds_alert_like_drift(api, cancer_v1, logreg):
    ids = _log(logreg.X_test.iloc[:40])
    wrong = [1 - int(v) for v in logreg.estimator.predict(logreg.X_test.iloc[:40].to_numpy())]
    feedback = [{"request_id": r, "actual": a} for r, a in zip(ids, wrong, strict=True)]
    assert api.post("/api/v1/feedback", feedback, format="json").status_code == 202
    monitor = monitor_create(model=cancer_v1.model, name="q", window_hours=1, quality_thresholds={"accuracy": 0.9})
    report = monitor_run(monitor=monitor)
    assert report.quality["n"] == 40 and report.quality["accuracy"] == 0.0
    alert = Alert.objects.get(kind="quality")
    assert alert.subject == "accuracy" and "below the floor" in alert.message


@pytest.mark.django_db
def test_too_few_rows_gives_no_verdict_and_says_why(cancer_v1, logreg):
    _log(logreg.X_test.iloc[:5])
    report = monitor_run(monitor=monitor_create(model=cancer_v1.model, name="m", window_hours=1, min_rows=30))
    assert report.tested_features == 0 and report.dataset_drift is False
    assert "fewer than the 30" in report.note


@pytest.mark.django_db
def test_window_rows_takes_the_latest_rows_and_the_cap_samples(cancer_v1, logreg):
    _log(logreg.X_test.iloc[:60], hours_ago=30)
    _log(logreg.X_test.iloc[60:100])
    latest = monitor_run(monitor=monitor_create(model=cancer_v1.model, name="rows", window_rows=40, max_rows=100))
    assert latest.current_rows == 40
    capped = monitor_run(monitor=monitor_create(model=cancer_v1.model, name="cap", window_hours=48, max_rows=100))
    assert capped.current_rows == 100


@pytest.mark.django_db
def test_regressor_predictions_are_tested_as_numbers(diabetes_v1, ridge):
    _log(ridge.X_test, model="diabetes")
    report = monitor_run(monitor=monitor_create(model=diabetes_v1.model, name="m", window_hours=1))
    prediction = report.features[-1]
    assert prediction["name"] == PREDICTION and prediction["test"] == "ks"
    assert np.isclose(sum(prediction["histogram"]["current"]), 1.0)


@pytest.mark.django_db
def test_check_drift_command_prints_the_verdict(cancer_v1, logreg, capsys):
    _log(shifted(logreg.X_test))
    call_command("check_drift", "cancer", "--no-progress")
    out = capsys.readouterr().out
    assert "DATASET DRIFT" in out and "DRIFT" in out.splitlines()[1] + out
    assert DriftReport.objects.count() == 1


@pytest.mark.django_db
def test_check_drift_command_fails_in_one_line(classifier_model):
    with pytest.raises(CommandError, match="no model named 'nope'"):
        call_command("check_drift", "nope")
    with pytest.raises(CommandError, match="has no versions"):
        call_command("check_drift", "cancer")
