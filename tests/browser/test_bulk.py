"""Bulk work from the console as a person does it: upload a feedback CSV (preview, then what was stored and what
refused, by row), silence an alert, and export a drift report that opens offline from disk with its charts drawn."""

from __future__ import annotations

import pytest

from monitoring.models import Alert, DriftReport, Feedback

pytestmark = pytest.mark.django_db


def test_upload_a_feedback_csv_previews_then_names_the_refused_row(page, console, tmp_path):
    csv = tmp_path / "outcomes.csv"
    csv.write_text("request_id,actual\nbulk-1,1\nbulk-2,0\nbulk-3,\nbulk-4,1\n")
    page.goto(f"{console.url}/admin/monitoring/feedback/")
    page.click("text=Upload CSV")
    page.set_input_files("input[type=file]", str(csv))
    page.click("input[value=Preview]")
    preview = page.locator("#preview")
    assert "4 rows" in page.inner_text("#content") and "1 with problems" in page.inner_text("#content")
    assert "actual: This field is required." in preview.locator("tr:has-text('row 4')").inner_text()
    assert not Feedback.objects.filter(request_id__startswith="bulk-").exists()  # nothing stored by a preview
    page.click("input[value=Store]")
    summary = page.inner_text("#content")
    assert "3 of 4 rows stored" in summary
    assert "row 4" in page.locator("#refused").inner_text() and "actual" in page.locator("#refused").inner_text()
    assert sorted(Feedback.objects.filter(request_id__startswith="bulk-").values_list("request_id", flat=True)) == [
        "bulk-1",
        "bulk-2",
        "bulk-4",
    ]


def test_silence_an_alert_for_a_day(page, console):
    alert = Alert.objects.filter(resolved_at__isnull=True).first()
    assert alert is not None, "the demo opens an alert"
    page.goto(f"{console.url}/admin/monitoring/alert/{alert.pk}/change/")
    page.click("button:has-text('Silence 1d')")
    assert "silenced until" in page.locator(".messagelist").inner_text()
    alert.refresh_from_db()
    assert alert.silenced and alert.resolved_at is None
    assert page.locator("button:has-text('Lift the silence')").count() == 1
    page.goto(f"{console.url}/admin/monitoring/alert/")
    assert "silenced until" in page.locator(f"#result_list tr:has(input[value='{alert.pk}'])").inner_text()


def test_export_the_drift_report_and_open_it_offline(page, console, tmp_path):
    name = DriftReport.objects.filter(tested_features__gt=0).latest("created_at").model_name
    page.goto(f"{console.url}/admin/monitoring/monitor/model/{name}/")
    with page.expect_download() as download:
        page.click("text=Export as one HTML file")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name.startswith(f"drift-report-{name}-") and saved.suffix == ".html"
    html = saved.read_text()
    assert console.url not in html and "<script src" not in html and "<link" not in html  # nothing to fetch

    offline = page.context.browser.new_context()  # no session, and every request off the file refused
    offline.route("http://**/*", lambda route: route.abort())
    offline.route("https://**/*", lambda route: route.abort())
    tab = offline.new_page()
    tab.goto(saved.as_uri())
    assert f"Drift report: {name}" in tab.locator("h1").inner_text()
    tab.wait_for_function("document.querySelector('td.mw-histogram [data-chart]').mwChart !== undefined")
    histogram = tab.locator("td.mw-histogram [data-chart]").first.evaluate(
        "el => ({type: el.mwChart.config.type, legend: el.mwChart.data.datasets.map(d => d.label),"
        " width: el.querySelector('canvas').width})"
    )
    assert histogram["type"] == "bar" and histogram["legend"] == ["reference", "current"] and histogram["width"] > 0
    timeline = tab.locator("h2:has-text('Drift over time') + [data-chart]").evaluate("el => el.mwChart.scales.x.type")
    assert timeline == "time"
    offline.close()
