"""Alerts in the admin: buttons on the alert's page and actions on the list, through the alert services; the drift
dashboard's standalone HTML export."""

from __future__ import annotations

import pytest
from django.urls import reverse

from monitoring.models import Alert, AlertKind, Monitor

pytestmark = pytest.mark.django_db


@pytest.fixture
def alert(classifier_model):
    monitor = Monitor.objects.create(model=classifier_model, name="hourly")
    return Alert.objects.create(monitor=monitor, version=1, kind=AlertKind.DATASET_DRIFT, subject="", message="m")


def test_the_alert_page_offers_what_its_state_allows_and_the_buttons_go_through_the_services(admin_client, alert):
    page = reverse("admin:monitoring_alert_change", args=[alert.pk])
    text = admin_client.get(page).content.decode()
    assert all(label in text for label in ("Acknowledge", "Silence 1h", "Silence 1d", "Silence 7d", "Resolve"))
    assert "Lift the silence" not in text
    control = reverse("admin:monitoring_alert_control", args=[alert.pk, "acknowledge"])
    answer = admin_client.post(control, follow=True).content.decode()
    assert "acknowledge done" in answer and ">Acknowledge</button>" not in answer
    alert.refresh_from_db()
    assert alert.acknowledged_by.username == "admin"
    admin_client.post(reverse("admin:monitoring_alert_control", args=[alert.pk, "resolve"]))
    again = admin_client.post(reverse("admin:monitoring_alert_control", args=[alert.pk, "silence-1h"]), follow=True)
    assert "cannot be silenced" in again.content.decode()  # the service's refusal, in words
    assert "Silence 1h" not in again.content.decode()  # a resolved alert has no buttons


def test_list_actions_silence_and_resolve_the_selected_alerts(admin_client, alert):
    url = reverse("admin:monitoring_alert_changelist")
    admin_client.post(url, {"action": "silence_7d", "_selected_action": [alert.pk]})
    alert.refresh_from_db()
    assert alert.silenced
    assert "silenced until" in admin_client.get(url).content.decode()
    admin_client.post(url, {"action": "resolve", "_selected_action": [alert.pk]})
    alert.refresh_from_db()
    assert alert.resolution == "resolved by admin"


def test_the_drift_report_exports_as_one_file_with_nothing_to_fetch(admin_client, classifier_model):
    answer = admin_client.get(reverse("admin:monitoring_model_report", args=[classifier_model.name]))
    assert answer["Content-Disposition"].startswith('attachment; filename="drift-report-cancer-')
    html = answer.content.decode()
    assert "<script src" not in html and "<link" not in html and "/static/" not in html
    assert "Chart.js" in html and "data-chart" in html and "No drift report with tested features yet" in html


def test_a_view_only_user_is_offered_no_alert_action_or_button(client, alert, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_alert"))
    client.force_login(viewer)
    listing = client.get(reverse("admin:monitoring_alert_changelist")).content.decode()
    assert "Silence 1d the selected alerts" not in listing
    page = client.get(reverse("admin:monitoring_alert_change", args=[alert.pk])).content.decode()
    assert "Silence 1d" not in page
    client.post(reverse("admin:monitoring_alert_control", args=[alert.pk, "silence-1d"]))
    client.post(reverse("admin:monitoring_alert_changelist"), {"action": "silence_1d", "_selected_action": [alert.pk]})
    alert.refresh_from_db()
    assert alert.silenced_until is None
