"""Silencing an alert: no webhook is sent for it until the period ends; it stays open and can still be resolved."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from monitoring import webhooks
from monitoring.models import Alert, AlertKind, Monitor
from monitoring.services.alerts import AlertStateConflict, alert_resolve, alert_silence

pytestmark = pytest.mark.django_db


@pytest.fixture
def alert(classifier_model, receiver):
    monitor = Monitor.objects.create(model=classifier_model, name="hourly", webhook_url=receiver.url)
    return Alert.objects.create(monitor=monitor, version=1, kind=AlertKind.DATASET_DRIFT, subject="", message="m")


def test_a_silenced_alert_sends_no_webhook_until_the_period_ends(alert, receiver):
    before = timezone.now()
    silenced = alert_silence(alert=alert, period="1d")
    assert before + timedelta(days=1) <= silenced.silenced_until <= timezone.now() + timedelta(days=1)
    assert silenced.status == "open" and silenced.silenced

    assert webhooks.webhook_send(alert=Alert.objects.get(pk=alert.pk), status="firing") is False
    assert receiver.bodies == []
    assert "silenced until" in Alert.objects.get(pk=alert.pk).webhook_status

    Alert.objects.filter(pk=alert.pk).update(silenced_until=timezone.now() - timedelta(seconds=1))  # it ran out
    assert webhooks.webhook_send(alert=Alert.objects.get(pk=alert.pk), status="firing") is True
    assert [b["status"] for b in receiver.bodies] == ["firing"]


def test_a_zero_period_lifts_the_silence_and_bad_periods_are_refused_in_words(alert):
    alert_silence(alert=alert, period=timedelta(hours=3))
    assert alert_silence(alert=alert, period=timedelta(0)).silenced_until is None
    with pytest.raises(ValidationError) as refused:
        alert_silence(alert=alert, period="forever")
    assert "one of 1h, 1d, 7d" in str(refused.value.message_dict["period"])
    with pytest.raises(ValidationError):
        alert_silence(alert=alert, period=timedelta(days=31))


def test_a_resolved_alert_cannot_be_silenced(alert):
    alert_resolve(alert=alert, note="fixed")
    with pytest.raises(AlertStateConflict, match="cannot be silenced"):
        alert_silence(alert=alert, period="1h")


def test_silence_over_rest_answers_the_end_time_and_refuses_other_periods_with_400(api, alert):
    url = f"/api/v1/alerts/{alert.pk}/silence/"
    answer = api.post(url, {"period": "7d"}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["silenced_until"] == Alert.objects.get(pk=alert.pk).silenced_until.isoformat().replace(
        "+00:00", "Z"
    )
    refused = api.post(url, {"period": "1y"}, format="json")
    assert refused.status_code == 400 and "period" in refused.json()
    assert api.post(url, {"period": "0"}, format="json").json()["silenced_until"] is None
    alert_resolve(alert=alert)
    assert api.post(url, {"period": "1h"}, format="json").status_code == 409
