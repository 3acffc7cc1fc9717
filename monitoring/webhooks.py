"""Alert webhooks: one JSON POST per alert state change, never raising to the caller.

Signed (Standard Webhooks, the monitor's secret) and guarded like every webhook (registry/webhooks). Each call
here is one attempt; the retries are Celery's (`monitoring.tasks.deliver_webhook` re-queues itself with
exponential backoff), so no worker sleeps between attempts.

The body (README "Monitoring"):
    {"status": "firing" | "resolved", "alert_id": 7, "kind": "dataset_drift" | "quality", "subject": "f1",
     "model": "churn", "version": 3, "monitor": "hourly", "message": "...", "details": {...},
     "opened_at": "2026-01-01T10:00:00+00:00", "resolved_at": null, "resolution": "", "report_id": 12}
`version` is the version the alert belongs to (not necessarily the report's: a monitor that moved to another
version resolves the old version's alerts, with a `resolution` saying so); `message` and `details` are as opened.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from monitoring.models import Alert
from registry.webhooks import sending
from registry.webhooks.sending import webhook_attempts, webhook_backoff_s
from registry.webhooks.services import RetryLater

logger = logging.getLogger(__name__)
__all__ = ["RetryLater", "webhook_attempts", "webhook_backoff_s", "webhook_body", "webhook_send"]


def webhook_body(alert: Alert, status: str) -> dict[str, Any]:
    report = alert.last_report
    return {
        "status": status,
        "alert_id": alert.pk,
        "kind": alert.kind,
        "subject": alert.subject,
        "model": alert.monitor.model.name,
        "version": alert.version,
        "monitor": alert.monitor.name,
        "message": alert.message,
        "details": alert.details,
        "opened_at": alert.opened_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "resolution": alert.resolution,
        "report_id": report.pk if report else None,
    }


def _record(alert: Alert, outcome: str) -> None:
    Alert.objects.filter(pk=alert.pk).update(webhook_status=outcome[:200])


def webhook_send(*, alert: Alert, status: str, attempt: int = 1, attempts: int | None = None) -> bool:
    """Make attempt number `attempt` of `attempts` to POST the alert and record the outcome on the alert.

    True when delivered; False when the receiver refused the body (4xx other than 429) or this was the last attempt;
    raises RetryLater (outcome recorded, "retrying") when another attempt is worth making.
    """
    attempts = webhook_attempts() if attempts is None else attempts
    if alert.silenced:
        _record(alert, f"{status}: not sent, silenced until {alert.silenced_until:%Y-%m-%d %H:%M %Z}")
        return False
    monitor = alert.monitor
    body = json.dumps(webhook_body(alert, status)).encode()
    # One message per alert and status: the same webhook-id on every attempt, for the receiver's deduplication.
    result = sending.post(
        url=monitor.webhook_url, secret=monitor.webhook_secret, message_id=f"msg_alert_{alert.pk}_{status}", body=body
    )
    outcome = f"{status}: {result.outcome} after {attempt} attempt(s)"
    if result.delivered:
        _record(alert, outcome)
        return True
    if result.retryable and attempt < attempts:
        _record(alert, f"{outcome}, retrying")
        raise RetryLater(outcome)
    logger.warning("alert %s webhook failed: %s", alert.pk, outcome)
    _record(alert, outcome)
    return False
