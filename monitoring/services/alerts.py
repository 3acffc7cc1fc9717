"""Alerts: opened once per version while a condition holds (deduplicated), resolved once when it clears or when the
monitor moves to another version; never rewritten. Webhooks queued for both."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from config.queueing import enqueue
from monitoring.models import Alert, AlertKind, DriftReport, Monitor, WatchedAs
from monitoring.quality import LOWER_IS_BETTER

logger = logging.getLogger(__name__)


def _conditions(monitor: Monitor, report: DriftReport) -> dict[tuple[str, str], tuple[bool, str, dict]]:
    """(kind, subject) -> (holds, message, details), for the conditions this report can decide."""
    conditions: dict[tuple[str, str], tuple[bool, str, dict]] = {}
    if report.tested_features:
        drifted = [f["name"] for f in report.features if f.get("drifted")]
        message = (
            f"{report.model_name} v{report.version}: {report.drifted_features} of {report.tested_features} features"
            f" drifted ({report.drift_share:.0%}; dataset drift at {monitor.dataset_drift_share:.0%})"
        )
        details = {"drift_share": report.drift_share, "drifted_features": drifted}
        conditions[(AlertKind.DATASET_DRIFT, "")] = (report.dataset_drift, message, details)
    for metric, threshold in (monitor.quality_thresholds or {}).items():
        value = report.quality.get(metric)
        if value is None:
            continue  # no ground truth yet: the condition is unknown, leave any open alert as it is
        ceiling = metric in LOWER_IS_BETTER
        holds = value > threshold if ceiling else value < threshold
        bound = "above the ceiling" if ceiling else "below the floor"
        message = f"{report.model_name} v{report.version}: {metric} {value:.4g} {bound} {threshold:g}"
        details = {"metric": metric, "value": value, "threshold": threshold, "n": report.quality.get("n")}
        conditions[(AlertKind.QUALITY, metric)] = (holds, message, details)
    return conditions


def _moved_reason(report: DriftReport) -> str:
    """Why the open alerts of another version are resolved by this report."""
    if report.watched_as == WatchedAs.NONE:
        return f"the monitor watches no version: {report.model_name} has no production version"
    why = "production moved" if report.watched_as == WatchedAs.PRODUCTION else "its pinned version changed"
    return f"the monitor now watches v{report.version}: {why}"


def _resolve(alert: Alert, report: DriftReport, reason: str) -> None:
    alert.resolved_at = timezone.now()
    alert.last_report = report
    alert.resolution = reason[:200]
    alert.save(update_fields=["resolved_at", "last_report", "resolution"])


def alerts_evaluate(*, monitor: Monitor, report: DriftReport) -> list[tuple[Alert, str]]:
    """Open, keep or resolve this monitor's alerts from a stored report; answers the (alert, status) notified.

    Alerts belong to the version they were opened on: the open alerts of any other version are resolved (the
    monitor no longer watches it), and this version's conditions open alerts of their own.
    """
    from monitoring.tasks import deliver_webhook  # tasks import services: import here, not at module level

    watched = report.version if report.watched_as != WatchedAs.NONE else None
    open_alerts: dict[tuple[str, str], Alert] = {}
    notified: list[tuple[Alert, str]] = []
    for alert in monitor.alerts.filter(resolved_at__isnull=True).order_by("opened_at", "id"):
        if watched is not None and alert.version == watched:
            open_alerts[(alert.kind, alert.subject)] = alert
        else:
            _resolve(alert, report, _moved_reason(report))
            notified.append((alert, "resolved"))
    for (kind, subject), (holds, message, details) in _conditions(monitor, report).items():
        alert = open_alerts.get((kind, subject))
        if holds and alert is None:
            try:
                with transaction.atomic():
                    alert = Alert.objects.create(
                        monitor=monitor, version=report.version, kind=kind, subject=subject, message=message,
                        details=details, last_report=report,
                    )  # fmt: skip
            except IntegrityError:  # another run of this monitor opened it first: one alert, one notification
                continue
            notified.append((alert, "firing"))
        elif holds:
            # Still holding on the same version: only "last seen" moves; the text and figures stay as opened.
            Alert.objects.filter(pk=alert.pk).update(last_report=report)
        elif alert is not None:
            _resolve(alert, report, f"cleared on v{report.version}")
            notified.append((alert, "resolved"))
    if monitor.webhook_url:
        for alert, status in notified:
            transaction.on_commit(lambda a=alert.pk, s=status: _enqueue(deliver_webhook, a, s))
    return notified


def _enqueue(task, alert_id: int, status: str) -> None:
    """Queue the webhook; a broker that is down must not fail the monitor run that already committed."""
    try:
        enqueue(task, alert_id, status)  # bounded in web processes (config/queueing.py)
    except Exception as exc:
        logger.exception("could not queue the webhook for alert %s", alert_id)
        Alert.objects.filter(pk=alert_id).update(webhook_status=f"{status}: not queued ({exc.__class__.__name__})")
