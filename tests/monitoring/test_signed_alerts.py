"""Alert webhooks are signed with the monitor's secret (shown once), guarded like every webhook (no private targets,
no redirects followed), and their URLs are shown whole only to those who may change the monitor's model."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient
from standardwebhooks import Webhook

from monitoring import webhooks
from monitoring.models import Alert, AlertKind, Monitor
from registry import permissions
from serving.tokens import user_token_create
from tests.serving.conftest import make_key
from tests.webhook_receiver import HookReceiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def hook():
    receiver = HookReceiver()
    yield receiver
    receiver.close()


def _alert(monitor: Monitor) -> Alert:
    return Alert.objects.create(monitor=monitor, version=1, kind=AlertKind.QUALITY, subject="f1", message="f1 low")


def test_a_monitor_made_with_a_webhook_answers_its_secret_once_and_its_alerts_verify(api, classifier_model, hook):
    made = api.post("/api/v1/monitors", {"model": "cancer", "name": "hourly", "webhook_url": hook.url}, format="json")
    assert made.status_code == 201, made.json()
    secret = made.json()["webhook_secret"]
    assert secret.startswith("whsec_") and made.json()["webhook_url"] == hook.url
    assert "webhook_secret" not in api.get(f"/api/v1/monitors/{made.json()['id']}").json()
    alert = _alert(Monitor.objects.get())
    assert webhooks.webhook_send(alert=alert, status="firing") is True
    (received,) = hook.received
    body = Webhook(secret).verify(received.body, received.headers)
    assert body["alert_id"] == alert.pk and body["status"] == "firing"
    assert received.headers["webhook-id"] == f"msg_alert_{alert.pk}_firing"


def test_a_monitor_webhook_to_a_private_or_metadata_address_is_refused_at_save(api, classifier_model, settings):
    settings.MODELWORKS_WEBHOOK_ALLOWED_NETWORKS = []
    for url in ("http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:6379/", "http://10.1.2.3/hook"):
        answer = api.post("/api/v1/monitors", {"model": "cancer", "name": "m", "webhook_url": url}, format="json")
        assert answer.status_code == 400 and list(answer.json()) == ["webhook_url"], answer.json()
    assert not Monitor.objects.exists()


def test_an_alert_webhook_is_refused_at_delivery_once_its_target_is_not_allowed(classifier_model, hook, settings):
    monitor = Monitor.objects.create(model=classifier_model, name="hourly", webhook_url=hook.url)
    settings.MODELWORKS_WEBHOOK_ALLOWED_NETWORKS = []
    alert = _alert(monitor)
    assert webhooks.webhook_send(alert=alert, status="firing", attempt=1, attempts=5) is False
    assert hook.received == []
    assert (
        Alert.objects.get().webhook_status == "firing: refused: the target is not an allowed address after 1 attempt(s)"
    )


def test_an_alert_webhook_does_not_follow_a_redirect(classifier_model, hook):
    redirecting = HookReceiver(redirect_to=f"http://127.0.0.1:{hook.port}/internal")
    try:
        monitor = Monitor.objects.create(model=classifier_model, name="hourly", webhook_url=redirecting.url)
        assert webhooks.webhook_send(alert=_alert(monitor), status="firing", attempt=1, attempts=5) is False
    finally:
        redirecting.close()
    assert len(redirecting.received) == 1 and hook.received == []
    assert Alert.objects.get().webhook_status == "firing: HTTP 302: redirects are not followed after 1 attempt(s)"


def test_webhook_urls_are_masked_for_readers_and_whole_for_writers(client, api, classifier_model, django_user_model):
    url = "https://hooks.example.com/services/T000/B000/tokentokentoken"
    Monitor.objects.create(model=classifier_model, name="hourly", webhook_url=url, webhook_secret="whsec_AAAA")
    permissions.ensure_roles()
    viewer = django_user_model.objects.create_user(username="vera", password="x" * 12)
    viewer.groups.add(Group.objects.get(name=permissions.VIEWER))
    viewing = APIClient()
    viewing.credentials(HTTP_AUTHORIZATION=f"Token {user_token_create(user=viewer)[1]}")
    readers = {
        "viewer": viewing,
        "registry:read key": APIClient(HTTP_AUTHORIZATION=f"Api-Key {make_key('registry:read')}"),
    }
    for who, reader in readers.items():
        listed = reader.get("/api/v1/monitors")
        assert listed.status_code == 200, who
        (shown,) = listed.json()["results"]
        assert shown["webhook_url"] == "https://hooks.example.com/…", who
        assert "token" not in listed.content.decode() and "whsec_" not in listed.content.decode(), who
    writer = APIClient(HTTP_AUTHORIZATION=f"Api-Key {make_key('registry:read', 'registry:write')}")
    assert writer.get("/api/v1/monitors").json()["results"][0]["webhook_url"] == url
    assert api.get("/api/v1/monitors").json()["results"][0]["webhook_url"] == url  # a data scientist: write
    assert "whsec_" not in api.get("/api/v1/monitors").content.decode()
