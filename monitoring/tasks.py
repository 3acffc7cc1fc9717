"""Celery entry points for monitoring: thin wrappers that load rows by id and call one service."""

from __future__ import annotations

from celery import Task, shared_task

from monitoring import traffic, webhooks
from monitoring.models import Alert, Monitor
from monitoring.services import events, feedback, monitors


@shared_task(
    name="monitoring.run_monitor", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=300, time_limit=360, expires=3600,
)  # fmt: skip
def run_monitor(monitor_id: int) -> int:
    """Run one monitor; answers the stored report's id."""
    monitor = Monitor.objects.select_related("model").get(pk=monitor_id)
    return monitors.monitor_run(monitor=monitor).pk


@shared_task(
    name="monitoring.run_due_monitors", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=30, time_limit=45, expires=50,
)  # fmt: skip
def run_due_monitors() -> list[int]:
    """The beat tick: queue every enabled monitor whose interval has passed."""
    due = monitors.monitors_claim_due()
    for monitor in due:
        run_monitor.delay(monitor.pk)
    return [monitor.pk for monitor in due]


# No expires: a late alert is still owed (its retries wait out a countdown); the attempt count bounds it.
@shared_task(
    bind=True, name="monitoring.deliver_webhook", acks_late=True, reject_on_worker_lost=True, max_retries=None,
    soft_time_limit=60, time_limit=90,
)  # fmt: skip
def deliver_webhook(self: Task, alert_id: int, status: str) -> bool:
    """One attempt; a failed one is re-queued with a countdown (Celery's retry), so the worker is free meanwhile.
    The number of attempts is bounded by `webhook_send`, which records the last outcome on the alert."""
    alert = Alert.objects.select_related("monitor__model", "last_report").get(pk=alert_id)
    attempt = self.request.retries + 1
    try:
        return webhooks.webhook_send(alert=alert, status=status, attempt=attempt)
    except webhooks.RetryLater as exc:
        raise self.retry(countdown=webhooks.webhook_backoff_s(attempt), exc=exc) from exc


@shared_task(
    name="monitoring.join_feedback", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=240, time_limit=270, expires=240,
)  # fmt: skip
def join_feedback() -> int:
    """Feedback that arrived before its prediction was logged, or named only a routing key, joins here."""
    return feedback.feedback_join_pending()


@shared_task(
    name="monitoring.rollup_traffic", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=45, time_limit=55, expires=50,
)  # fmt: skip
def rollup_traffic() -> int:
    """The beat tick: recount the prediction log's last minutes into the console's traffic rollup."""
    return traffic.traffic_rollup()


@shared_task(
    name="monitoring.prune_feedback_and_events", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=2400, time_limit=2520, expires=3000,
)  # fmt: skip
def prune_feedback_and_events() -> dict[str, int]:
    """Retention: feedback older than MODELWORKS_RETENTION_FEEDBACK_DAYS and business events older than
    MODELWORKS_RETENTION_EVENTS_DAYS (0: kept)."""
    return {"feedback": feedback.feedback_prune(), "business_events": events.business_events_prune()}
