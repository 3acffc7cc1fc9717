"""Webhook endpoints and their deliveries: the one place that writes them.

An event fires into a delivery row per subscribed endpoint, in the transaction that made the event; the delivery
task is queued once that commits, and each attempt is one Celery task run (a failed one re-queued with backoff, so
no worker waits between attempts).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from config.queueing import enqueue
from registry import audit, permissions
from registry.models import DeliveryStatus, RegisteredModel, WebhookDelivery, WebhookEndpoint
from registry.webhooks import events, sending, signing, targets

logger = logging.getLogger(__name__)


class RetryLater(Exception):
    """This attempt failed in a way another may not, and attempts remain."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def checked_url(url: str, field: str) -> str:
    """The URL unless it may not receive webhooks; a 400 on `field` saying why otherwise. A name that does not
    resolve (yet) is accepted: every delivery checks the target again before it connects."""
    try:
        targets.check_target(url)
    except targets.TargetUnresolved:
        pass
    except targets.TargetRefused as exc:
        raise ValidationError({field: [str(exc)]}) from None
    return url


def _snapshot(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """The endpoint as the audit trail keeps it: the URL masked (it may hold a token), never the secret."""
    return {"url": targets.mask_url(endpoint.url), "event_types": endpoint.event_types,
            "model": endpoint.model.name if endpoint.model else None, "description": endpoint.description,
            "active": endpoint.active}  # fmt: skip


def _checked_event_types(value: Any) -> list[str]:
    known = events.event_types()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValidationError({"event_types": [f"a non-empty list of event types: {', '.join(known)}"]})
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ValidationError({"event_types": [f"unknown event type '{v}'" for v in unknown]})
    return sorted(set(value))


@transaction.atomic
def webhook_endpoint_create(
    *,
    url: str,
    event_types: list[str],
    model: RegisteredModel | None = None,
    description: str = "",
    active: bool = True,
    actor: Any = None,
) -> WebhookEndpoint:
    """A new endpoint with a fresh secret (on the returned row: show it now, it is never shown again). Needs admin."""
    permissions.check(actor, permissions.ADMIN)
    types = _checked_event_types(event_types)
    endpoint = WebhookEndpoint(
        url=checked_url(url, "url"), secret=signing.new_secret(), event_types=types, model=model,
        description=description, active=active, created_by=actor if getattr(actor, "pk", None) else None,
    )  # fmt: skip
    endpoint.full_clean()
    endpoint.save()
    audit.record("webhook.created", target=endpoint, before=None, after=_snapshot(endpoint), actor=actor,
                 source=audit.current_source())  # fmt: skip
    return endpoint


@transaction.atomic
def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    actor: Any = None,
    url: str | None = None,
    event_types: list[str] | None = None,
    model: Any = ...,  # a model, None for every model; left out: unchanged
    description: str | None = None,
    active: bool | None = None,
) -> WebhookEndpoint:
    permissions.check(actor, permissions.ADMIN)
    locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    before = _snapshot(locked)
    if url is not None and url != locked.url:
        locked.url = checked_url(url, "url")
    if event_types is not None:
        locked.event_types = _checked_event_types(event_types)
    if model is not ...:
        locked.model = model
    if description is not None:
        locked.description = description
    if active is not None:
        locked.active = active
    locked.full_clean()
    locked.save()
    if _snapshot(locked) != before:
        audit.record("webhook.changed", target=locked, before=before, after=_snapshot(locked), actor=actor,
                     source=audit.current_source())  # fmt: skip
    return locked


@transaction.atomic
def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: Any = None) -> None:
    permissions.check(actor, permissions.ADMIN)
    audit.record("webhook.deleted", target=endpoint, before=_snapshot(endpoint), after=None, actor=actor,
                 source=audit.current_source())  # fmt: skip
    WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()


def webhook_event_fire(*, event_type: str, model: RegisteredModel, data: dict[str, Any]) -> list[WebhookDelivery]:
    """A delivery for every active endpoint subscribed to `event_type` (on every model or on this one), queued when
    the caller's transaction commits. Event types are filtered here, not in SQL: the embedded SQLite has no JSON
    containment."""
    endpoints = WebhookEndpoint.objects.filter(Q(model__isnull=True) | Q(model=model), active=True)
    made = []
    payload = {"type": event_type, "timestamp": timezone.now().isoformat(), "data": {"model": model.name, **data}}
    for endpoint in endpoints:
        if event_type not in endpoint.event_types:
            continue
        made.append(
            WebhookDelivery.objects.create(
                endpoint=endpoint, message_id=f"msg_{uuid.uuid4().hex}", event_type=event_type, payload=payload
            )
        )
    for delivery in made:
        transaction.on_commit(lambda pk=delivery.pk: _enqueue(pk))
    return made


def _enqueue(delivery_id: int) -> None:
    """Queue the delivery; a broker that is down must not fail the change that already committed."""
    from registry.tasks import deliver_webhook  # tasks import services: import here, not at module level

    try:
        enqueue(deliver_webhook, delivery_id)
    except Exception as exc:
        logger.exception("could not queue webhook delivery %s", delivery_id)
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            status=DeliveryStatus.FAILED, outcome=f"not queued ({exc.__class__.__name__})", finished_at=timezone.now()
        )


def webhook_delivery_attempt(*, delivery: WebhookDelivery, attempt: int = 1, attempts: int | None = None) -> bool:
    """Attempt number `attempt` of `attempts` of one delivery, recorded on its row. True when delivered; False when
    refused for good or out of attempts; RetryLater when another attempt is worth making."""
    attempts = sending.webhook_attempts() if attempts is None else attempts
    if delivery.status != DeliveryStatus.PENDING:
        return delivery.status == DeliveryStatus.DELIVERED  # a redelivered task after the outcome was recorded
    endpoint = WebhookEndpoint.objects.get(pk=delivery.endpoint_id)  # as it is now: deactivated, or its URL changed
    if not endpoint.active:
        _finish(delivery, DeliveryStatus.FAILED, "not sent: the endpoint is inactive", attempt - 1)
        return False
    body = json.dumps(delivery.payload).encode()
    result = sending.post(url=endpoint.url, secret=endpoint.secret, message_id=delivery.message_id, body=body)
    outcome = f"{result.outcome} after {attempt} attempt(s)"
    if result.delivered:
        _finish(delivery, DeliveryStatus.DELIVERED, outcome, attempt)
        return True
    if result.retryable and attempt < attempts:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=attempt, outcome=f"{outcome}, retrying")
        raise RetryLater(outcome)
    logger.warning("webhook delivery %s failed: %s", delivery.pk, outcome)
    _finish(delivery, DeliveryStatus.FAILED, outcome, attempt)
    return False


def _finish(delivery: WebhookDelivery, status: str, outcome: str, attempts: int) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=status, outcome=outcome[:200], attempts=attempts, finished_at=timezone.now()
    )
    delivery.status, delivery.outcome, delivery.attempts = status, outcome[:200], attempts
