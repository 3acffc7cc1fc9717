"""The monitoring API: monitors, on-demand runs, reports, reference samples and quality, with 400s that name fields."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import DriftReport, Monitor, ReferenceDataset
from tests.conftest import upload
from tests.monitoring.conftest import flush, predict_each, rows


@pytest.fixture
def monitor(api, cancer_v1):
    response = api.post(
        "/api/v1/monitors",
        {"model": "cancer", "name": "hourly", "window_hours": 2, "correction": "bh", "min_wasserstein": 0.1},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return Monitor.objects.get(pk=response.json()["id"])


@pytest.mark.django_db
def test_create_run_and_read_reports(api, monitor, logreg):
    predict_each("cancer", rows(logreg.X_test))
    flush()
    response = api.post(f"/api/v1/monitors/{monitor.pk}/run", {"wait": True}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["tested_features"] == 31 and body["dataset_drift"] is False
    assert {"statistic", "p_value", "p_adjusted", "psi", "wasserstein_norm", "histogram"} <= set(body["features"][0])
    listed = api.get(f"/api/v1/monitors/{monitor.pk}/reports").json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == body["id"]
    assert api.get(f"/api/v1/monitors/{monitor.pk}").json()["correction"] == "bh"


@pytest.mark.django_db
def test_a_run_without_wait_is_queued(api, monitor):
    response = api.post(f"/api/v1/monitors/{monitor.pk}/run", {}, format="json")
    assert response.status_code == 202 and response.json()["queued"] is True
    assert DriftReport.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "cancer", "name": "m", "p_threshold": 2}, "p_threshold"),
        ({"model": "cancer", "name": "m", "correction": "holm"}, "correction"),
        ({"model": "cancer", "name": "m", "quality_thresholds": {"karma": 1}}, "quality_thresholds"),
        ({"model": "cancer", "name": "m", "version": 9}, "version"),
        ({"model": "cancer", "name": "m", "webhook_url": "ftp://x"}, "webhook_url"),
        ({"name": "m"}, "model"),
    ],
)
def test_bad_monitors_are_a_400_naming_the_field(api, cancer_v1, body, field):
    response = api.post("/api/v1/monitors", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()
    assert Monitor.objects.count() == 0


@pytest.mark.django_db
def test_a_duplicate_monitor_name_is_a_400(api, monitor):
    response = api.post("/api/v1/monitors", {"model": "cancer", "name": "hourly"}, format="json")
    assert response.status_code == 400 and "name" in response.json()


@pytest.mark.django_db
def test_upload_a_reference_sample_or_take_one_from_traffic(
    api, cancer_v1, logreg, artifact_root, django_capture_on_commit_callbacks
):
    url = "/api/v1/models/cancer/versions/1/reference"
    csv = logreg.X_test.iloc[:50].to_csv(index=False).encode()
    response = api.post(url, {"data": upload(csv, "ref.csv")}, format="multipart")
    assert response.status_code == 201, response.json()
    assert response.json()["rows"] == 50 and response.json()["source"] == "upload"
    first_path = ReferenceDataset.objects.get().path
    assert (artifact_root / first_path).exists()

    predict_each("cancer", rows(logreg.X_test, 0, 20))
    flush()
    now = timezone.now()
    window = {"since": (now - timedelta(hours=1)).isoformat(), "until": (now + timedelta(minutes=1)).isoformat()}
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(url, window, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["source"] == "traffic" and response.json()["rows"] == 20
    assert not (artifact_root / first_path).exists()  # the replaced sample's file is gone


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "data"),
        ({"data": upload(b"a,b\n1,2\n", "ref.csv")}, "data"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since"),
    ],
)
def test_bad_reference_samples_are_a_400(api, cancer_v1, body, field):
    fmt = "multipart" if "data" in body else "json"
    response = api.post("/api/v1/models/cancer/versions/1/reference", body, format=fmt)
    assert response.status_code == 400, response.json()
    assert field in response.json()
    assert ReferenceDataset.objects.count() == 0


@pytest.mark.django_db
def test_quality_endpoint(api, cancer_v1, logreg):
    ids = predict_each("cancer", rows(logreg.X_test, 0, 10))
    flush()
    api.post("/api/v1/feedback", [{"request_id": r, "actual": 1} for r in ids], format="json")
    body = api.get("/api/v1/models/cancer/versions/1/quality").json()
    assert body["n"] == 10 and body["task"] == "classification" and 0 <= body["accuracy"] <= 1
    assert api.get("/api/v1/models/cancer/versions/1/quality?since=never").status_code == 400
    assert api.get("/api/v1/models/cancer/versions/7/quality").status_code == 404


@pytest.mark.django_db
def test_monitoring_api_needs_authentication(client, monitor):
    assert client.get("/api/v1/monitors").status_code in (401, 403)
    assert client.post(f"/api/v1/monitors/{monitor.pk}/run").status_code in (401, 403)
