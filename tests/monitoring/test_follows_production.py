"""Monitors follow production: an unpinned monitor watches where the production alias points when it runs, and an
alert belongs to the version it was opened on (resolved, never rewritten, when the monitor moves on)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from monitoring import webhooks
from monitoring.models import Alert, WatchedAs
from monitoring.services.monitors import monitor_create, monitor_run
from monitoring.windows import Window, _current_frame_python, current_frame, feature_kinds
from registry import services as registry
from serving import prediction_log, routing
from serving import services as serving
from serving.model_cache import model_cache
from serving.models import Outcome, PredictionLog, RouteReason
from serving.prediction_log import LogEntry, masked_inputs
from serving.shadow import shadow_request_id
from tests.monitoring.conftest import flush, predict_each, rows, shifted, webhooks_queued

pytestmark = pytest.mark.django_db


@pytest.fixture
def cancer_versions(classifier_model, logreg):
    """cancer v1..v4 registered, production on v2 (v1 archived by the move)."""
    versions = {
        n: registry.model_version_register(
            model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
        )
        for n in range(1, 5)
    }
    registry.alias_create(model=classifier_model, name="production", version=versions[1])
    registry.alias_move(model=classifier_model, name="production", version=versions[2])
    return versions


def promote(versions, number: int) -> None:
    """Move the production alias, as a release manager does (registry services)."""
    registry.alias_move(model=versions[number].model, name="production", version=versions[number])
    routing.clear_cache()  # every process follows within MODELWORKS_ROUTE_TTL_MS; this one at once


def log_production(frame) -> list[str]:
    ids = predict_each("cancer", rows(frame))
    flush()
    return ids


def log_pinned(frame, version: int) -> None:
    for instance in rows(frame):
        serving.predict(model_name="cancer", payload={"instances": [instance]}, version=version)
    flush()


def log_shadow_copies(version, frame) -> None:
    """Mirrored copies scored by `version` and logged as serving/shadow.py logs them: never answered to a client."""
    loaded = model_cache().get(version)
    for instance in rows(frame):
        row = [instance[f["name"]] for f in version.signature["inputs"]]
        predictions, probabilities = loaded.predict([row])
        prediction_log.prediction_log().append(
            LogEntry(
                request_id=shadow_request_id(uuid.uuid4().hex),
                model_name="cancer",
                version=version.version,
                routing_key="",
                inputs=masked_inputs([row], version.signature),
                outputs={"predictions": list(predictions), "probabilities": probabilities},
                latency_ms=1.0,
                cached=False,
                route_reason=RouteReason.shadow(RouteReason.owner("rollout", 1)),
                outcome=Outcome.SHADOW,
                created_at=timezone.now(),
            )
        )
    flush()


def test_after_a_promotion_the_monitor_watches_the_new_production_and_resolves_the_old_versions_alert(
    cancer_versions, logreg, receiver, django_capture_on_commit_callbacks
):
    monitor = monitor_create(model=cancer_versions[2].model, name="hourly", window_hours=1, webhook_url=receiver.url)
    log_production(shifted(logreg.X_test))  # v2 drifts
    first = monitor_run(monitor=monitor)
    assert first.version == 2 and first.watched_as == WatchedAs.PRODUCTION
    assert first.watching == "watching v2: the production version at run time"
    opened = Alert.objects.get()
    assert opened.version == 2 and opened.open and "cancer v2:" in opened.message
    message, details = opened.message, opened.details

    promote(cancer_versions, 4)
    log_production(logreg.X_test.iloc[:60])  # fewer v4 rows than v2 rows in the window: v2 is still the busiest
    with django_capture_on_commit_callbacks() as queued:
        second = monitor_run(monitor=monitor)
    assert second.version == 4 and second.watching == "watching v4: the production version at run time"
    assert second.current_rows == 60  # only v4's rows are the current window
    assert second.dataset_drift is False

    resolved = Alert.objects.get(pk=opened.pk)
    assert not resolved.open and resolved.resolution == "the monitor now watches v4: production moved"
    assert (resolved.version, resolved.message, resolved.details) == (2, message, details)  # never rewritten
    assert not Alert.objects.filter(resolved_at__isnull=True).exists()
    assert len(webhooks_queued(queued)) == 1  # one webhook, "resolved", as a cleared condition is notified
    body = webhooks.webhook_body(resolved, "resolved")
    assert body["version"] == 2 and body["resolution"] == resolved.resolution and body["message"] == message

    log_production(shifted(logreg.X_test))  # now v4 drifts: an alert of its own
    third = monitor_run(monitor=monitor)
    assert third.version == 4 and third.dataset_drift is True
    fresh = Alert.objects.get(resolved_at__isnull=True)
    assert fresh.pk != opened.pk and fresh.version == 4 and "cancer v4:" in fresh.message
    assert Alert.objects.get(pk=opened.pk).message == message


def test_an_alert_holding_on_the_same_version_keeps_its_text_and_moves_last_seen(cancer_versions, logreg):
    monitor = monitor_create(model=cancer_versions[2].model, name="hourly", window_hours=1)
    log_production(shifted(logreg.X_test))
    monitor_run(monitor=monitor)
    alert = Alert.objects.get()
    log_production(shifted(logreg.X_test, 3.0))  # a different drift share on the same version
    again = monitor_run(monitor=monitor)
    kept = Alert.objects.get()
    assert kept.pk == alert.pk and kept.open and kept.last_report == again
    assert (kept.message, kept.details) == (alert.message, alert.details)


def test_a_pinned_monitor_keeps_watching_its_pin_after_a_promotion(cancer_versions, logreg):
    pinned = monitor_create(model=cancer_versions[2].model, name="v2 only", version=2, window_hours=1)
    log_production(shifted(logreg.X_test))
    assert monitor_run(monitor=pinned).watching == "watching v2: pinned"
    alert = Alert.objects.get()

    promote(cancer_versions, 4)
    log_production(logreg.X_test)  # production (v4) traffic is not the pin's
    log_pinned(shifted(logreg.X_test.iloc[:40]), version=2)  # clients still pinning ?version=2
    report = monitor_run(monitor=pinned)
    assert (report.version, report.watched_as) == (2, WatchedAs.PINNED)
    assert report.watching == "watching v2: pinned"
    assert report.current_rows == len(logreg.X_test) + 40
    assert Alert.objects.get().pk == alert.pk and Alert.objects.get().open  # its pin did not move


def test_a_model_without_production_records_that_there_is_nothing_to_watch(classifier_model, logreg, capsys):
    registry.model_version_register(model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)
    monitor = monitor_create(model=classifier_model, name="hourly")
    report = monitor_run(monitor=monitor)
    assert report.watched_as == WatchedAs.NONE and report.tested_features == 0
    assert report.note == report.watching == "cancer has no production version to watch"
    assert not Alert.objects.exists()

    call_command("check_drift", "cancer", "--no-progress")
    assert "cancer has no production version to watch" in capsys.readouterr().out


def test_shadow_copies_are_not_production_traffic_in_the_window(cancer_versions, logreg):
    # v4 was shadowed on drifting traffic while v2 served; then v4 is promoted and serves normal traffic.
    log_production(logreg.X_test)
    log_shadow_copies(cancer_versions[4], shifted(logreg.X_test))
    assert PredictionLog.objects.filter(version=4, outcome=Outcome.SHADOW).count() == len(logreg.X_test)
    promote(cancer_versions, 4)
    log_production(logreg.X_test.iloc[:50])

    report = monitor_run(monitor=monitor_create(model=cancer_versions[4].model, name="hourly", window_hours=1))
    assert report.version == 4 and report.current_rows == 50
    assert report.dataset_drift is False and report.drifted_features == 0
    assert not Alert.objects.exists()
    # The ORM path (SQLite, `make run`) reads the same window as the COPY path.
    version = cancer_versions[4]
    kinds, _ = feature_kinds(version)
    window = Window(since=timezone.now() - timedelta(hours=1), until=timezone.now())
    assert len(_current_frame_python(version, kinds, window)) == len(current_frame(version, window)) == 50


def test_the_admin_and_the_api_show_the_version_an_alert_belongs_to(api, client, staff, cancer_versions, logreg):
    monitor = monitor_create(model=cancer_versions[2].model, name="hourly", window_hours=1)
    log_production(shifted(logreg.X_test))
    monitor_run(monitor=monitor)
    promote(cancer_versions, 4)
    log_production(shifted(logreg.X_test))
    monitor_run(monitor=monitor)

    alerts = api.get(f"/api/v1/monitors/{monitor.pk}/alerts").json()["results"]
    assert [(a["version"], a["resolved_at"] is None) for a in alerts] == [(4, True), (2, False)]
    assert alerts[1]["resolution"] == "the monitor now watches v4: production moved"
    reports = api.get(f"/api/v1/monitors/{monitor.pk}/reports").json()["results"]
    assert [r["watching"] for r in reports] == [
        "watching v4: the production version at run time",
        "watching v2: the production version at run time",
    ]

    client.force_login(staff)
    listing = client.get(reverse("admin:monitoring_alert_changelist")).content.decode()
    assert "v2" in listing and "v4" in listing and "production moved" in listing
    dashboard = client.get(reverse("admin:monitoring_model_dashboard", args=["cancer"])).content.decode()
    assert "<td>v4</td>" in dashboard and "watching v4: the production version at run time" in dashboard
