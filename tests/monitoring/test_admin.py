"""The monitoring pages of the admin, as a data scientist opens them in a browser session."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from monitoring.models import Alert, DriftReport
from monitoring.services.monitors import monitor_create, monitor_run
from tests.charts import chart_specs
from tests.monitoring.conftest import flush, predict_each, rows, shifted

pytestmark = pytest.mark.django_db


@pytest.fixture
def console(client, staff):
    client.force_login(staff)
    return client


def test_the_model_dashboard_shows_report_histograms_history_and_alerts(console, api, cancer_v1, logreg):
    keys = [f"user-{i}" for i in range(len(logreg.X_test))]
    ids = predict_each("cancer", rows(shifted(logreg.X_test)), keys=keys)
    flush()
    api.post("/api/v1/feedback", [{"request_id": r, "actual": 1} for r in ids], format="json")
    api.post("/api/v1/events", [{"key": "user-3", "name": "renewal_signed", "value": 120}], format="json")
    monitor = monitor_create(model=cancer_v1.model, name="hourly", window_hours=1)
    monitor_run(monitor=monitor)
    monitor_run(monitor=monitor)

    page = console.get(reverse("admin:monitoring_model_dashboard", args=["cancer"]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "dataset drift" in html and Alert.objects.get().message in html
    specs = chart_specs(html)
    histograms = [s for s in specs if s["kind"] == "bars"]
    assert len(histograms) == 31  # one per feature the report tested, with labelled bins
    assert all(len(h["labels"]) == len(h["datasets"][0]["values"]) for h in histograms)
    numeric = [h for h in histograms if h["x_label"] == "value bin"]
    assert len(numeric) == 30 and all(" – " in label for h in numeric for label in h["labels"])
    assert [d["label"] for d in histograms[0]["datasets"]] == ["reference", "current"]
    drift, quality = [s for s in specs if s["kind"] == "line"]
    assert drift["y_label"] == "share of features drifted" and len(drift["datasets"][0]["points"]) == 2
    assert "accuracy" in [d["label"] for d in quality["datasets"]]
    assert "renewal_signed" in html  # the business-impact table
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', html)  # nothing loaded from another host


def test_every_monitoring_page_renders_for_staff(console, cancer_v1, logreg):
    predict_each("cancer", rows(logreg.X_test, 0, 40))
    flush()
    monitor = monitor_create(model=cancer_v1.model, name="hourly", window_hours=1)
    report = monitor_run(monitor=monitor)
    pages = [
        reverse("admin:monitoring_monitor_changelist"),
        reverse("admin:monitoring_monitor_change", args=[monitor.pk]),
        reverse("admin:monitoring_driftreport_changelist"),
        reverse("admin:monitoring_driftreport_change", args=[report.pk]),
        reverse("admin:monitoring_alert_changelist") + "?resolved_at__isnull=True",
        reverse("admin:monitoring_feedback_changelist"),
        reverse("admin:monitoring_businessevent_changelist"),
        reverse("admin:monitoring_referencedataset_changelist"),
        reverse("admin:monitoring_model_dashboard", args=["cancer"]),
    ]
    for url in pages:
        assert console.get(url).status_code == 200, url


def test_run_now_action_runs_and_lands_on_the_dashboard(console, cancer_v1, logreg):
    predict_each("cancer", rows(logreg.X_test, 0, 40))
    flush()
    monitor = monitor_create(model=cancer_v1.model, name="hourly", window_hours=1)
    response = console.post(
        reverse("admin:monitoring_monitor_changelist"), {"action": "run_now", "_selected_action": [monitor.pk]}
    )
    assert response.status_code == 302
    assert response.url == reverse("admin:monitoring_model_dashboard", args=["cancer"])
    assert DriftReport.objects.count() == 1


def test_the_dashboard_needs_staff(client, cancer_v1):
    response = client.get(reverse("admin:monitoring_model_dashboard", args=["cancer"]))
    assert response.status_code == 302 and "login" in response.url
