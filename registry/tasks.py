"""Celery entry points for the registry: thin wrappers that load rows by id and call one service."""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from registry import audit, services
from registry.models import ModelVersion, WebhookDelivery
from registry.webhooks import services as webhooks
from registry.webhooks.sending import webhook_backoff_s


@shared_task(
    name="registry.verify_artifact", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=120, time_limit=150, expires=3600,
)  # fmt: skip
def verify_artifact(version_id: int) -> bool:
    """Re-hash one stored artifact; a mismatch marks the version and records an event."""
    version = ModelVersion.objects.select_related("model").get(pk=version_id)
    return services.model_version_verify_integrity(version=version)


@shared_task(
    name="registry.verify_all_artifacts", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=1500, time_limit=1620, expires=1800,
)  # fmt: skip
def verify_all_artifacts() -> dict[str, int]:
    """The hourly sweep: every artifact not already known bad is re-hashed."""
    checked = failed = 0
    for version in ModelVersion.objects.select_related("model").filter(integrity_failed_at__isnull=True).iterator():
        checked += 1
        failed += not services.model_version_verify_integrity(version=version)
    return {"checked": checked, "failed": failed}


# No expires: a late delivery is still owed (its retries wait out a countdown); the attempt count bounds it.
@shared_task(
    bind=True, name="registry.deliver_webhook", acks_late=True, reject_on_worker_lost=True, max_retries=None,
    soft_time_limit=60, time_limit=90,
)  # fmt: skip
def deliver_webhook(self: Task, delivery_id: int) -> bool:
    """One attempt; a failed one is re-queued with a countdown (Celery's retry), so the worker is free meanwhile.
    The number of attempts is bounded by `webhook_delivery_attempt`, which records the outcome on the delivery."""
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    attempt = self.request.retries + 1
    try:
        return webhooks.webhook_delivery_attempt(delivery=delivery, attempt=attempt)
    except webhooks.RetryLater as exc:
        raise self.retry(countdown=webhook_backoff_s(attempt), exc=exc) from exc


@shared_task(
    name="registry.prune_audit", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=1800, time_limit=1920, expires=3600,
)  # fmt: skip
def prune_audit() -> int:
    """The daily sweep: audit entries older than MODELWORKS_AUDIT_RETENTION_DAYS go."""
    return audit.prune()


# No expires: someone asked for it, and its version says the conversion is pending until it runs.
@shared_task(
    name="registry.convert_onnx", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=settings.MODELWORKS_ONNX_CONVERT_SECONDS, time_limit=settings.MODELWORKS_ONNX_CONVERT_SECONDS + 30,
)  # fmt: skip
def convert_onnx(version_id: int) -> str:
    """Convert one version to ONNX, check parity, measure both runtimes (registry/optimisation.py); the status."""
    from registry import optimisation

    version = ModelVersion.objects.select_related("model").get(pk=version_id)
    return optimisation.model_version_convert_onnx(version=version).onnx_conversion["status"]
