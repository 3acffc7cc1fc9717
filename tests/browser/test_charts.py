"""The console's charts as a person sees them: drawn (not blank), with a time axis, labelled axes and bins, a
legend, and words where there is nothing to draw."""

from __future__ import annotations

import pytest
from django.urls import reverse

from experiments.models import Experiment
from monitoring.models import DriftReport

pytestmark = pytest.mark.django_db

DRAWN = """el => el.mwChart && {
    type: el.mwChart.config.type,
    x: el.mwChart.scales.x.type,
    xTitle: el.mwChart.options.scales.x.title.text,
    yTitle: el.mwChart.options.scales.y.title.text,
    labels: el.mwChart.data.labels || [],
    legend: el.mwChart.data.datasets.map(d => d.label),
    width: el.querySelector('canvas').width,
}"""


def test_the_drift_dashboard_draws_labelled_histograms_and_a_timeline(page, console):
    name = DriftReport.objects.filter(tested_features__gt=0).latest("created_at").model_name
    page.goto(console.url + reverse("admin:monitoring_model_dashboard", args=[name]))
    assert "The chart library did not load" not in page.inner_text("#content")
    histograms = page.locator("td.mw-histogram [data-chart]")
    assert histograms.count() >= 1
    first = histograms.first.evaluate(DRAWN)
    assert first["type"] == "bar" and first["legend"] == ["reference", "current"] and first["width"] > 0
    assert first["yTitle"] == "share of rows" and first["labels"] and all(first["labels"])
    timeline = page.locator("h2:has-text('Drift over time') + [data-chart]").evaluate(DRAWN)
    assert timeline["x"] == "time" and timeline["yTitle"] == "share of features drifted"
    # a model with no ground truth says why its quality chart is empty
    quality = page.locator("h2:has-text('Quality over time') + [data-chart]")
    assert quality.evaluate(DRAWN) or "ground truth" in quality.inner_text()


def test_the_experiment_chart_runs_over_days_with_one_line_per_arm(page, console):
    experiment = Experiment.objects.get(status="running")
    page.goto(f"{console.url}/admin/experiments/experiment/{experiment.pk}/change/")
    chart = page.locator("[data-chart]").first.evaluate(DRAWN)
    assert chart["type"] == "line" and chart["x"] == "time" and chart["xTitle"] == "day"
    assert chart["legend"] == [arm.name for arm in experiment.arms.order_by("position")]
