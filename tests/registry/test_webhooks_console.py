"""Webhooks in the console: admins make endpoints (the secret shown once, private targets refused in words), others
do not see them; a monitor's webhook URL is masked for those who may not change its model."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from monitoring.models import Monitor
from registry import permissions
from registry.models import WebhookEndpoint

pytestmark = pytest.mark.django_db


def console(django_user_model, username: str, role: str) -> Client:
    permissions.ensure_roles()
    person = django_user_model.objects.create_user(username=username, password="x" * 12, is_staff=True)
    person.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(person)
    return client


def test_an_admin_makes_an_endpoint_and_sees_its_secret_once(django_user_model, settings):
    admin = console(django_user_model, "root-ish", permissions.ADMIN_ROLE)
    add = reverse("admin:registry_webhookendpoint_add")
    form = {"url": "http://127.0.0.1:9/ci", "event_types": ["alias.moved", "rollout.promoted"], "active": "on",
            "description": "deploys", "deliveries-TOTAL_FORMS": "0", "deliveries-INITIAL_FORMS": "0"}  # fmt: skip
    answer = admin.post(add, form, follow=True)
    assert answer.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.event_types == ["alias.moved", "rollout.promoted"] and endpoint.secret.startswith("whsec_")
    assert endpoint.secret in answer.content.decode()  # the message after saving: the one time it is shown
    change = admin.get(reverse("admin:registry_webhookendpoint_change", args=[endpoint.pk]))
    assert change.status_code == 200 and endpoint.secret not in change.content.decode()

    settings.MODELWORKS_WEBHOOK_ALLOWED_NETWORKS = []
    refused = admin.post(add, {**form, "url": "http://169.254.169.254/latest/meta-data/"})
    assert refused.status_code == 200 and "link-local address" in refused.content.decode()
    assert WebhookEndpoint.objects.count() == 1


def test_endpoints_are_not_shown_to_viewers_or_data_scientists(django_user_model):
    for username, role in (("vera", permissions.VIEWER), ("sci", permissions.DATA_SCIENTIST)):
        client = console(django_user_model, username, role)
        assert client.get(reverse("admin:registry_webhookendpoint_changelist")).status_code == 403
        assert client.get(reverse("admin:registry_webhookdelivery_changelist")).status_code == 403


def test_a_monitor_webhook_url_is_masked_in_the_console_for_those_without_write(django_user_model, classifier_model):
    url = "https://hooks.example.com/services/T000/B000/tokentokentoken"
    monitor = Monitor.objects.create(model=classifier_model, name="hourly", webhook_url=url)
    page = reverse("admin:monitoring_monitor_change", args=[monitor.pk])
    seen = console(django_user_model, "vera", permissions.VIEWER).get(page)
    assert seen.status_code == 200 and "tokentokentoken" not in seen.content.decode()
    assert "https://hooks.example.com/…" in seen.content.decode()
    scientist = console(django_user_model, "sci", permissions.DATA_SCIENTIST).get(page)
    assert scientist.status_code == 200 and "tokentokentoken" in scientist.content.decode()


def test_a_webhook_url_set_in_the_console_is_guarded_and_gets_a_secret_shown_once(
    django_user_model, classifier_model, settings
):
    from tests.test_admin_forms import MONITOR_DEFAULTS

    hook_url = "http://127.0.0.1:9/alerts"
    monitor = Monitor.objects.create(model=classifier_model, name="hourly")
    scientist = console(django_user_model, "sci", permissions.DATA_SCIENTIST)
    page = reverse("admin:monitoring_monitor_change", args=[monitor.pk])
    saved = scientist.post(page, {**MONITOR_DEFAULTS, "version": "", "webhook_url": hook_url}, follow=True)
    monitor.refresh_from_db()
    assert monitor.webhook_url == hook_url and monitor.webhook_secret.startswith("whsec_")
    assert monitor.webhook_secret in saved.content.decode()
    again = scientist.post(page, {**MONITOR_DEFAULTS, "version": "", "webhook_url": hook_url}, follow=True)
    assert monitor.webhook_secret not in again.content.decode()  # the same URL: the same secret, not shown again
    settings.MODELWORKS_WEBHOOK_ALLOWED_NETWORKS = []
    refused = scientist.post(page, {**MONITOR_DEFAULTS, "version": "", "webhook_url": "http://169.254.169.254/x"})
    assert refused.status_code == 200 and "link-local address" in refused.content.decode()
    monitor.refresh_from_db()
    assert monitor.webhook_url == hook_url  # nothing stored
