"""Celery entry points for monitoring: thin wrappers that load rows by id and call one service."""

from __future__ import annotations

from celery import Task, shared_task

from monitoring import traffic, webhooks
from monitoring.models import Alert, Monitor
from monitoring.services import events, feedback, monitors


@shared_task(name="monitoring.run_monitor", acks_late=True, reject_on_worker_lost=True, expires=3600)
def run_monitor(monitor_id: int) -> int:
    """Run one monitor; answers the stored report's id."""
    monitor = Monitor.objects.select_related("model").get(pk=monitor_id)
    return monitors.monitor_run(monitor=monitor).pk


@shared_task(name="monitoring.run_due_monitors", acks_late=True, reject_on_worker_lost=True)
def run_due_monitors() -> list[int]:
    """The beat tick: queue every enabled monitor whose interval has passed."""
    due = monitors.monitors_claim_due()
    for monitor in due:
        run_monitor.delay(monitor.pk)
    return [monitor.pk for monitor in due]


@shared_task(bind=True, name="monitoring.deliver_webhook", acks_late=True, reject_on_worker_lost=True, max_retries=None)
def deliver_webhook(self: Task, alert_id: int, status: str) -> bool:
    """One attempt; a failed one is re-queued with a countdown (Celery's retry), so the worker is free meanwhile.
    The number of attempts is bounded by `webhook_send`, which records the last outcome on the alert."""
    alert = Alert.objects.select_related("monitor__model", "last_report").get(pk=alert_id)
    attempt = self.request.retries + 1
    try:
        return webhooks.webhook_send(alert=alert, status=status, attempt=attempt)
    except webhooks.RetryLater as exc:
        raise self.retry(countdown=webhooks.webhook_backoff_s(attempt), exc=exc) from exc


@shared_task(name="monitoring.join_feedback", acks_late=True, reject_on_worker_lost=True)
def join_feedback() -> int:
    """Feedback that arrived before its prediction was logged, or named only a routing key, joins here."""
    return feedback.feedback_join_pending()


@shared_task(name="monitoring.rollup_traffic", acks_late=True, reject_on_worker_lost=True)
def rollup_traffic() -> int:
    """The beat tick: recount the prediction log's last minutes into the console's traffic rollup."""
    return traffic.traffic_rollup()


@shared_task(name="monitoring.prune_feedback_and_events", acks_late=True, reject_on_worker_lost=True)
def prune_feedback_and_events() -> dict[str, int]:
    """Retention: feedback older than MODELWORKS_RETENTION_FEEDBACK_DAYS and business events older than
    MODELWORKS_RETENTION_EVENTS_DAYS (0: kept)."""
    return {"feedback": feedback.feedback_prune(), "business_events": events.business_events_prune()}
