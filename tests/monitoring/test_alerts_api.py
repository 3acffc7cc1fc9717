"""Alerts over REST: list and filter them, acknowledge one (it stays open), resolve it by hand; 409 when its state
does not allow the change."""

from __future__ import annotations

import json

import pytest

from monitoring.models import Alert, AlertKind, Monitor
from monitoring.services.alerts import alert_resolve
from tests.serving.conftest import make_key

pytestmark = pytest.mark.django_db
ALERTS = "/api/v1/alerts/"


@pytest.fixture
def alerts(classifier_model, regressor_model):
    """Two monitors of two models with an alert each, and a resolved one."""
    cancer = Monitor.objects.create(model=classifier_model, name="hourly")
    diabetes = Monitor.objects.create(model=regressor_model, name="daily")
    drift = Alert.objects.create(
        monitor=cancer,
        version=1,
        kind=AlertKind.DATASET_DRIFT,
        subject="",
        message="cancer v1: 12 of 30 features drifted",
        details={"drift_share": 0.4},
    )
    quality = Alert.objects.create(
        monitor=diabetes,
        version=1,
        kind=AlertKind.QUALITY,
        subject="rmse",
        message="diabetes v1: rmse 71 above the ceiling 65",
        details={"value": 71},
    )
    old = Alert.objects.create(monitor=cancer, version=1, kind=AlertKind.QUALITY, subject="f1", message="f1 low")
    alert_resolve(alert=old, actor=None, note="")
    return drift, quality, old


def ids(answer) -> list[int]:
    assert answer.status_code == 200, answer.content
    return [row["id"] for row in answer.json()["results"]]


def test_an_alert_goes_open_acknowledged_resolved_and_says_who_and_why(api, alerts, user):
    drift, _, _ = alerts
    url = f"{ALERTS}{drift.pk}/"
    opened = api.get(url).json()
    assert (opened["status"], opened["model"], opened["acknowledged_by"]) == ("open", "cancer", None)

    acked = api.post(f"{url}acknowledge/", {"note": "looking at the upstream feed"}, format="json")
    assert acked.status_code == 200, acked.content
    body = acked.json()
    assert body["status"] == "acknowledged" and body["acknowledged_by"] == "ada" and body["acknowledged_at"]
    assert body["acknowledgement"] == "looking at the upstream feed" and body["resolved_at"] is None
    twice = api.post(f"{url}acknowledge/", {}, format="json")
    assert twice.status_code == 409 and "already acknowledged by ada" in twice.json()["detail"]

    resolved = api.post(f"{url}resolve/", {"note": "feed fixed"}, format="json")
    assert resolved.status_code == 200
    body = resolved.json()
    assert body["status"] == "resolved" and body["resolution"] == "resolved by ada: feed fixed"
    assert body["acknowledged_by"] == "ada"  # the acknowledgement stays on record

    again = api.post(f"{url}resolve/", {"note": "again"}, format="json")
    assert again.status_code == 409 and "was resolved at" in again.json()["detail"]
    late = api.post(f"{url}acknowledge/", format="json")
    assert late.status_code == 409 and "cannot be acknowledged" in late.json()["detail"]
    assert Alert.objects.get(pk=drift.pk).resolution == "resolved by ada: feed fixed"
    # The monitor's own list still answers, with the new fields.
    listed = api.get(f"/api/v1/monitors/{drift.monitor_id}/alerts").json()["results"]
    assert {row["id"]: row["status"] for row in listed}[drift.pk] == "resolved"


def test_an_open_alert_resolved_without_a_note_names_who(api, alerts):
    _, quality, _ = alerts
    answer = api.post(f"{ALERTS}{quality.pk}/resolve/", format="json")
    assert answer.status_code == 200 and answer.json()["resolution"] == "resolved by ada"
    assert api.post(f"{ALERTS}{quality.pk}/resolve/", {"note": "x" * 500}, format="json").status_code == 409
    other = Alert.objects.create(monitor=quality.monitor, version=2, kind=AlertKind.QUALITY, subject="mae", message="m")
    too_long = api.post(f"{ALERTS}{other.pk}/resolve/", {"note": "x" * 500}, format="json")
    assert too_long.status_code == 400 and "note" in too_long.json()
    assert api.post(f"{ALERTS}{other.pk}/acknowledge/", {"note": ["a", "list"]}, format="json").status_code == 400
    for unstorable in ("nul\x00", "lone\ud800"):
        body = json.dumps({"note": unstorable})  # escapes a lone surrogate
        answer = api.post(f"{ALERTS}{other.pk}/acknowledge/", body, content_type="application/json")
        assert answer.status_code == 400 and "note" in answer.json(), answer.content
    assert Alert.objects.get(pk=other.pk).status == "open"


def test_alerts_filter_by_status_model_monitor_and_version(api, alerts):
    drift, quality, old = alerts
    api.post(f"{ALERTS}{quality.pk}/acknowledge/", format="json")
    assert ids(api.get(ALERTS)) == [old.pk, quality.pk, drift.pk]  # newest first
    assert ids(api.get(ALERTS, {"status": "open"})) == [drift.pk]
    assert ids(api.get(ALERTS, {"status": "acknowledged"})) == [quality.pk]
    assert ids(api.get(ALERTS, {"status": "resolved"})) == [old.pk]
    assert ids(api.get(ALERTS, {"model": "cancer"})) == [old.pk, drift.pk]
    assert ids(api.get(ALERTS, {"model": "cancer", "status": "open"})) == [drift.pk]
    assert ids(api.get(ALERTS, {"monitor": quality.monitor_id})) == [quality.pk]
    assert ids(api.get(ALERTS, {"version": 2})) == []
    assert ids(api.get(ALERTS, {"model": "nobody"})) == []
    for bad in ({"status": "closed"}, {"monitor": "one"}, {"version": 0}):
        answer = api.get(ALERTS, bad)
        assert answer.status_code == 400 and set(bad) <= set(answer.json()), answer.content
    assert api.get(f"{ALERTS}999999/").status_code == 404
    assert api.post(f"{ALERTS}999999/resolve/", format="json").status_code == 404


def test_api_keys_read_alerts_with_registry_read_and_change_them_with_registry_write(client, alerts):
    drift, _, _ = alerts
    reader = {"HTTP_AUTHORIZATION": f"Api-Key {make_key('registry:read')}"}
    writer = {"HTTP_AUTHORIZATION": f"Api-Key {make_key('registry:read', 'registry:write')}"}
    predictor = {"HTTP_AUTHORIZATION": f"Api-Key {make_key('predict:*')}"}
    assert client.get(ALERTS, **reader).status_code == 200
    assert client.get(ALERTS, **predictor).status_code == 403
    assert client.get(ALERTS).status_code == 401
    assert client.post(f"{ALERTS}{drift.pk}/acknowledge/", **reader).status_code == 403
    answer = client.post(f"{ALERTS}{drift.pk}/acknowledge/", **writer)
    assert answer.status_code == 200 and answer.json()["acknowledged_by"] is None  # a key is no user
    resolved = client.post(f"{ALERTS}{drift.pk}/resolve/", {"note": "ok"}, content_type="application/json", **writer)
    assert resolved.json()["resolution"] == "resolved by apikey:test: ok"
