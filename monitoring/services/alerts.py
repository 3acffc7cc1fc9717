"""Alerts: opened once per version while a condition holds (deduplicated), resolved once when it clears, when the
monitor moves to another version or by hand; their text never rewritten. Webhooks queued for both. Someone may
acknowledge an open alert (it stays open) before it is resolved."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.queueing import enqueue
from config.storable import unstorable
from monitoring.models import Alert, AlertKind, DriftReport, Monitor, WatchedAs
from monitoring.quality import LOWER_IS_BETTER
from registry import audit

logger = logging.getLogger(__name__)
NOTE_LENGTH = 2000


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


class AlertStateConflict(Exception):
    """The alert is not in a state that allows the change (acknowledging a resolved alert, resolving one twice): the
    API answers 409 with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _actor_name(actor: Any) -> str:
    return getattr(actor, "username", "") or str(actor or "") or "system"


def _locked(alert: Alert) -> Alert:
    return (
        Alert.objects.select_for_update(of=("self",))
        .select_related("monitor__model", "acknowledged_by")
        .get(pk=alert.pk)
    )


def _closed(alert: Alert, doing: str) -> AlertStateConflict:
    return AlertStateConflict(
        f"alert {alert.pk} was resolved at {alert.resolved_at.isoformat()} ({alert.resolution or 'no reason given'}):"
        f" it cannot be {doing}"
    )


def _check_note(note: Any) -> str:
    if not isinstance(note, str):
        raise ValidationError({"note": ["must be text"]})
    if problem := unstorable(note):
        raise ValidationError({"note": [f"cannot be stored: {problem}"]})
    if len(note) > NOTE_LENGTH:
        raise ValidationError({"note": [f"at most {NOTE_LENGTH} characters ({len(note)} given)"]})
    return note.strip()


@transaction.atomic
def alert_acknowledge(*, alert: Alert, actor: Any = None, note: str = "") -> Alert:
    """Someone is on it: the alert stays open (the monitor still resolves it when its condition clears) and says
    who acknowledged it, when, and their note. AlertStateConflict when it is resolved or already acknowledged."""
    note = _check_note(note)
    locked = _locked(alert)
    if locked.resolved_at is not None:
        raise _closed(locked, "acknowledged")
    before = _alert_state(locked)
    if locked.acknowledged_at is not None:
        who = locked.acknowledged_by.username if locked.acknowledged_by else "someone"
        raise AlertStateConflict(
            f"alert {locked.pk} was already acknowledged by {who} at {locked.acknowledged_at.isoformat()}"
        )
    locked.acknowledged_at = timezone.now()
    locked.acknowledged_by = actor if getattr(actor, "pk", None) else None
    locked.acknowledgement = note
    locked.save(update_fields=["acknowledged_at", "acknowledged_by", "acknowledgement"])
    _audit("alert.acknowledged", locked, before, actor)
    return locked


@transaction.atomic
def alert_resolve(*, alert: Alert, actor: Any = None, note: str = "") -> Alert:
    """Resolve an open (or acknowledged) alert by hand: resolution "resolved by <user>: <note>", and the monitor's
    webhook hears "resolved" as for any resolution. If the condition still holds, the next run opens a new alert.
    AlertStateConflict when it is already resolved."""
    from monitoring.tasks import deliver_webhook  # tasks import services: import here, not at module level

    note = _check_note(note)
    locked = _locked(alert)
    if locked.resolved_at is not None:
        raise _closed(locked, "resolved again")
    prefix = f"resolved by {_actor_name(actor)}"
    room = Alert._meta.get_field("resolution").max_length - len(prefix) - 2
    if len(note) > room:
        raise ValidationError(
            {"note": [f"at most {room} characters here ({len(note)} given): it goes in the resolution"]}
        )
    before = _alert_state(locked)
    locked.resolved_at = timezone.now()
    locked.resolution = (f"{prefix}: {note}" if note else prefix)[: Alert._meta.get_field("resolution").max_length]
    locked.save(update_fields=["resolved_at", "resolution"])
    _audit("alert.resolved", locked, before, actor)
    if locked.monitor.webhook_url:
        transaction.on_commit(lambda: _enqueue(deliver_webhook, locked.pk, "resolved"))
    return locked


def _alert_state(alert: Alert) -> dict[str, Any]:
    return audit.snapshot(alert, ("acknowledged_at", "acknowledged_by", "acknowledgement", "resolved_at", "resolution",
                                  "silenced_until"))  # fmt: skip


def _audit(action: str, alert: Alert, before: dict[str, Any], actor: Any) -> None:
    audit.record(action, target=alert, before=before, after=_alert_state(alert), actor=actor,
                 source=audit.current_source())  # fmt: skip


SILENCE_PERIODS = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "7d": timedelta(days=7)}
MAX_SILENCE = timedelta(days=30)


@transaction.atomic
def alert_silence(*, alert: Alert, period: timedelta | str, actor: Any = None) -> Alert:
    """No webhook for this alert until now + period ("1h", "1d", "7d" or a timedelta up to 30 days); it stays open
    and the monitor still resolves it. Silencing again replaces the end time; a zero period lifts the silence.
    AlertStateConflict when it is resolved."""
    if isinstance(period, str):
        if period not in SILENCE_PERIODS:
            raise ValidationError({"period": [f"one of {', '.join(SILENCE_PERIODS)} ({period!r} given)"]})
        period = SILENCE_PERIODS[period]
    if period < timedelta(0) or period > MAX_SILENCE:
        raise ValidationError({"period": ["between no time and 30 days"]})
    locked = _locked(alert)
    if locked.resolved_at is not None:
        raise _closed(locked, "silenced")
    before = _alert_state(locked)
    locked.silenced_until = timezone.now() + period if period else None
    locked.save(update_fields=["silenced_until"])
    _audit("alert.silenced", locked, before, actor)
    logger.info("alert %s silenced until %s by %s", locked.pk, locked.silenced_until, _actor_name(actor))
    return locked
