"""Health, readiness and metrics: what load balancers, Kubernetes probes and Prometheus see."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.serving.conftest import post, rows_of

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_auth():
    response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_metrics_count_predictions_with_bounded_labels(caller, production, logreg):
    post(caller, "/api/v1/models/cancer/predict", {"instances": rows_of(logreg.X_test, 3)})
    post(caller, "/api/v1/models/cancer/predict", {"instances": [{"bad": 1}]})
    text = Client().get("/metrics").content.decode()
    assert 'modelworks_predictions_total{model="cancer",outcome="ok",version="1"}' in text
    assert 'modelworks_predictions_total{model="cancer",outcome="invalid",version="1"}' in text
    assert "modelworks_prediction_latency_seconds_bucket" in text
    assert 'modelworks_circuit_breaker_state{model="cancer",version="1"} 0.0' in text
    assert "modelworks_model_load_seconds_count" in text and "modelworks_prediction_log_buffer_depth" in text
    for line in text.splitlines():
        if line.startswith("modelworks_"):
            assert "request_id" not in line and "key=" not in line
