"""seed_demo grows a monitoring demo: a monitor with a drifted latest report, ground truth and events; twice is fine."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from monitoring.models import BusinessEvent, DriftReport, Feedback, Monitor


@pytest.mark.django_db
def test_seed_demo_seeds_a_drift_monitor_once(capsys):
    call_command("seed_demo")
    monitor = Monitor.objects.get(name="demo-drift")
    reports = list(DriftReport.objects.filter(monitor=monitor).order_by("id"))
    assert len(reports) == 2
    assert reports[0].dataset_drift is False and reports[1].dataset_drift is True
    assert reports[1].quality["n"] == 100
    assert Feedback.objects.filter(joined_at__isnull=False).count() == 200
    assert BusinessEvent.objects.filter(name="follow_up_booked").exists()
    call_command("seed_demo")
    assert DriftReport.objects.count() == 2
    assert "monitoring demo already seeded" in capsys.readouterr().out
