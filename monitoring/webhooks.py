"""Alert webhooks: one JSON POST per alert state change, never raising to the caller.

Each call here is one attempt; the retries are Celery's (`monitoring.tasks.deliver_webhook` re-queues itself with
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
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings

from monitoring.models import Alert

logger = logging.getLogger(__name__)
TIMEOUT_S = 5.0


class RetryLater(Exception):
    """This attempt failed in a way another may not (a network error, 5xx or 429) and attempts remain."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def webhook_attempts() -> int:
    return max(1, settings.MODELWORKS_WEBHOOK_ATTEMPTS)


def webhook_backoff_s(attempt: int) -> float:
    """How long to wait after failed attempt `attempt` (1-based): the base, doubled per attempt."""
    return settings.MODELWORKS_WEBHOOK_BACKOFF_MS / 1000 * 2 ** (attempt - 1)


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


def _post(url: str, body: bytes) -> int:
    if not url.startswith(("http://", "https://")):
        raise urllib.error.URLError(f"not an http(s) URL: {url[:40]}")
    request = urllib.request.Request(  # noqa: S310 (checked just above: http(s) only)
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "modelworks"}
    )
    # The URL comes from a URLField, which accepts http(s) only.
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
        return response.status


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
    url = alert.monitor.webhook_url
    body = json.dumps(webhook_body(alert, status)).encode()
    retryable = True
    try:
        code = _post(url, body)
        outcome = f"{status}: HTTP {code} after {attempt} attempt(s)"
        if code < 300:
            _record(alert, outcome)
            return True
    except urllib.error.HTTPError as exc:
        outcome = f"{status}: HTTP {exc.code} after {attempt} attempt(s)"
        retryable = exc.code >= 500 or exc.code == 429  # otherwise the receiver refuses this body: resending won't help
    except (urllib.error.URLError, OSError) as exc:
        outcome = f"{status}: {exc.__class__.__name__} after {attempt} attempt(s)"
    if retryable and attempt < attempts:
        _record(alert, f"{outcome}, retrying")
        raise RetryLater(outcome)
    logger.warning("alert %s webhook failed: %s", alert.pk, outcome)
    _record(alert, outcome)
    return False
