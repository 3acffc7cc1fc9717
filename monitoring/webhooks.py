"""Alert webhooks: one JSON POST per alert state change, retried with backoff, never raising to the caller.

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
import time
import urllib.error
import urllib.request
from typing import Any

from monitoring.models import Alert

logger = logging.getLogger(__name__)
ATTEMPTS = 4
TIMEOUT_S = 5.0
BACKOFF_S = 0.5


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


def webhook_send(*, alert: Alert, status: str, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S) -> bool:
    """POST the alert; retry on errors and 5xx with exponential backoff; record the outcome on the alert."""
    url = alert.monitor.webhook_url
    body = json.dumps(webhook_body(alert, status)).encode()
    outcome = "no attempt"
    for attempt in range(1, attempts + 1):
        try:
            code = _post(url, body)
            outcome = f"{status}: HTTP {code} after {attempt} attempt(s)"
            if code < 300:
                Alert.objects.filter(pk=alert.pk).update(webhook_status=outcome)
                return True
        except urllib.error.HTTPError as exc:
            outcome = f"{status}: HTTP {exc.code} after {attempt} attempt(s)"
            if exc.code < 500 and exc.code != 429:
                break  # the receiver refuses this body: sending it again will not help
        except (urllib.error.URLError, OSError) as exc:
            outcome = f"{status}: {exc.__class__.__name__} after {attempt} attempt(s)"
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    logger.warning("alert %s webhook failed: %s", alert.pk, outcome)
    Alert.objects.filter(pk=alert.pk).update(webhook_status=outcome)
    return False
