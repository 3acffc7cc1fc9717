"""The console's home, as a data scientist meets it after `make run`: what is live per model, what is changing,
what is wrong, and what just happened; apps in the order people work; charts drawn by the vendored library."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from registry.models import RegisteredModel
from tests.browser.conftest import wait_until

pytestmark = pytest.mark.django_db


def _row(page, name: str):
    return page.locator(f"tr.mw-model-row[data-model='{name}']")


def test_the_home_says_per_model_what_serves_and_what_is_changing(page, console):
    rows = page.locator("tr.mw-model-row")
    names = [rows.nth(i).get_attribute("data-model") for i in range(rows.count())]
    assert names == sorted(RegisteredModel.objects.values_list("name", flat=True))
    for model in RegisteredModel.objects.all():
        production = model.aliases.filter(name="production").first()
        cell = _row(page, model.name).locator("td.mw-production").inner_text()
        assert cell == (f"v{production.version.version}" if production else "nothing in production")
    changing = page.locator("td.mw-changing").all_inner_texts()
    assert any("rollout of v" in text and "stage" in text and "% to the candidate" in text for text in changing)
    assert any("experiment" in text and "keys" in text for text in changing)


def test_the_home_counts_the_last_hours_traffic_and_draws_it(page, console):
    from datetime import timedelta

    from django.utils import timezone

    from serving.models import PredictionLog

    hour_ago = timezone.now() - timedelta(hours=1)  # the demo's rows are minutes or days old: none near this edge
    for model in RegisteredModel.objects.all():
        traffic = _row(page, model.name).locator("td.mw-traffic")
        expected = PredictionLog.objects.filter(model_name=model.name, created_at__gte=hour_ago).count()
        assert traffic.inner_text().strip().endswith(f"{expected} request{'s' if expected != 1 else ''}")
        chart = traffic.locator("[data-chart]")
        if expected:
            # drawn by Chart.js: a canvas with one point per minute of the hour, summing to the count shown
            total = chart.evaluate("el => el.mwChart.data.datasets[0].data.reduce((s, p) => s + p.y, 0)")
            assert total == expected
        else:
            assert chart.inner_text() == "no traffic"


def test_open_alerts_and_drift_verdicts_link_to_the_model_dashboard(page, console):
    from monitoring.models import Alert

    for model in RegisteredModel.objects.all():
        alerts = Alert.objects.filter(monitor__model=model, resolved_at__isnull=True).count()
        text = _row(page, model.name).locator("td.mw-alerts").inner_text()
        assert text == (f"{alerts} open" if alerts else "none open")
    drift_links = page.locator("td.mw-drift a")
    assert drift_links.count() >= 1
    drift_links.first.click()
    assert "Latest drift report" in page.inner_text("#content")


def test_recent_activity_comes_from_the_event_logs_newest_first(page, console):
    items = page.locator("#recent-activity li")
    assert items.count() >= 3
    texts = items.all_inner_texts()
    assert any("registry" in t for t in texts) and any("rollout" in t for t in texts)
    assert "Recent actions" not in page.inner_text("#content-related")
    stamps = [t.rsplit("·", 1)[-1].strip() for t in texts]
    assert stamps == sorted(stamps, reverse=True)


def test_apps_come_in_the_order_people_work_and_view_site_goes_home(page, console):
    captions = [c.strip() for c in page.locator("#content-main .module caption").all_text_contents()]
    order = ["Registry", "Serving", "Rollouts", "Experiments", "Monitoring", "Features"]
    assert [c for c in captions if c in order] == order
    assert captions.index("Features") < captions.index("Authentication and Authorization")
    page.click("text=View site")
    assert page.url == f"{console.url}/admin/"
    assert page.locator("#live-heading").inner_text() == "Live now"
    if os.environ.get("MODELWORKS_SCREENSHOTS"):  # a folder: to look at the page as a person would
        page.screenshot(path=str(Path(os.environ["MODELWORKS_SCREENSHOTS"]) / "console-home.png"), full_page=True)


def test_the_home_refreshes_in_place_when_traffic_arrives(page, console, browser, settings):
    from django.db import connection

    from tests.monitoring.conftest import flush

    settings.MODELWORKS_CONSOLE_REFRESH_S = 2
    page.goto(f"{console.url}/admin/")
    page.evaluate("window.mwNotReloaded = true")
    traffic = _row(page, "breast-cancer-forest").locator("td.mw-traffic")
    before = int(traffic.inner_text().split()[-2])
    other = page.context.new_page()  # a colleague tries a prediction in another tab
    other.goto(f"{console.url}/admin/models/breast-cancer-forest/")
    other.click("#try-form button[type=submit]")
    assert "Prediction" in other.locator("#answer").inner_text()
    # The live server answers in this process, so its log buffer is this one: flushed from a thread of its own (its
    # own connection, committed), as the buffer's background thread would, not inside this test's transaction.
    flusher = threading.Thread(target=lambda: (flush(), connection.close()))
    flusher.start()
    flusher.join()
    wait_until(
        page,
        f"document.querySelector(\"tr[data-model='breast-cancer-forest'] td.mw-traffic\").innerText.trim()"
        f".endsWith('{before + 1} request{'' if before == 0 else 's'}')",
        timeout_ms=15_000,
    )
    assert page.evaluate("window.mwNotReloaded") is True  # refreshed in place, not reloaded
    assert page.locator("#live-region").get_attribute("data-refreshed-at")
