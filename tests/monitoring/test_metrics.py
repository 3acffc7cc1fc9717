"""Prometheus: the planned drift and quality metrics from the stored reports, and process CPU and memory."""

from __future__ import annotations

import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.services.monitors import monitor_create, monitor_run
from tests.monitoring.conftest import flush, predict_each, rows, shifted


def _scrape(client) -> dict:
    response = client.get("/metrics/monitoring")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.mark.django_db
def test_drift_and_quality_gauges_follow_the_latest_report(client, api, cancer_v1, logreg):
    ids = predict_each("cancer", rows(shifted(logreg.X_test)))
    flush()
    api.post("/api/v1/feedback", [{"request_id": r, "actual": 1} for r in ids], format="json")
    report = monitor_run(monitor=monitor_create(model=cancer_v1.model, name="m", window_hours=1))
    samples = _scrape(client)
    version = (("model", "cancer"), ("version", "1"))
    assert samples[("modelworks_drift_dataset_share", version)] == pytest.approx(report.drift_share)
    assert samples[("modelworks_drift_dataset_detected", version)] == 1.0
    drifted = next(f for f in report.features if f["drifted"])
    key = tuple(sorted((*version, ("feature", drifted["name"]))))
    assert samples[("modelworks_drift_detected", key)] == 1.0
    assert samples[("modelworks_drift_p_value", key)] == pytest.approx(drifted["p_adjusted"])
    quality = tuple(sorted((*version, ("metric", "accuracy"))))
    assert samples[("modelworks_model_quality", quality)] == pytest.approx(report.quality["accuracy"])
    assert samples[("modelworks_monitoring_open_alerts", (("kind", "dataset_drift"),))] == 1.0


@pytest.mark.django_db
def test_process_cpu_and_memory_are_exported(client):
    samples = _scrape(client)
    pid = (("pid", str(os.getpid())),)
    assert samples[("modelworks_process_resident_memory_bytes", pid)] > 10_000_000
    assert samples[("modelworks_process_cpu_seconds_total", pid)] > 0
