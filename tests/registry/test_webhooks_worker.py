"""Registry webhooks on a real Celery worker and Redis broker: the registration commits, the delivery is queued, a
failing receiver is retried with backoff (no worker waiting), every attempt signed with the same webhook-id."""

from __future__ import annotations

import time

import pytest
from standardwebhooks import Webhook

from registry import services as registry
from registry.models import WebhookDelivery
from registry.webhooks import services as webhooks
from tests.monitoring.test_worker import BACKOFF_MS, _wait_for, worker  # noqa: F401  (the worker fixture)
from tests.webhook_receiver import HookReceiver


@pytest.fixture
def hook():
    receiver = HookReceiver(failures=1)
    yield receiver
    receiver.close()


@pytest.mark.django_db(transaction=True)
def test_a_registration_reaches_ci_through_the_worker_retried_after_a_failure(worker, classifier_model, logreg, hook):  # noqa: F811
    endpoint = webhooks.webhook_endpoint_create(url=hook.url, event_types=["version.validated"])
    registry.model_version_register(model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)

    def delivered() -> bool:
        return WebhookDelivery.objects.filter(status="delivered").exists()

    started = time.monotonic()
    assert _wait_for(delivered, timeout=90), worker.read_text()[-3000:]
    delivery = WebhookDelivery.objects.get()
    assert (delivery.attempts, delivery.outcome) == (2, "HTTP 200 after 2 attempt(s)")
    assert len(hook.received) == 2 and time.monotonic() - started >= BACKOFF_MS / 1000 * 0.9
    assert {r.headers["webhook-id"] for r in hook.received} == {delivery.message_id}
    body = Webhook(endpoint.secret).verify(hook.received[1].body, hook.received[1].headers)
    assert body["type"] == "version.validated" and body["data"]["model"] == "cancer"
