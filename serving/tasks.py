"""Celery entry points for serving, run by beat: the log's day partitions, retention of the log and the dead letters."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from serving import partitions, services
from serving.retention import retention_cutoff


@shared_task(
    name="serving.prune_predictions", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=2400, time_limit=2520, expires=3000,
)  # fmt: skip
def prune_predictions() -> int:
    """Remove log rows older than MODELWORKS_RETENTION_PREDICTIONS_DAYS (0: keep them all; on Postgres whole days
    go, services.prediction_log_prune); how many went."""
    before = retention_cutoff(settings.MODELWORKS_RETENTION_PREDICTIONS_DAYS)
    return services.prediction_log_prune(before=before) if before is not None else 0


@shared_task(
    name="serving.prune_dead_letters", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=2400, time_limit=2520, expires=3000,
)  # fmt: skip
def prune_dead_letters() -> int:
    """Delete dead letters older than MODELWORKS_RETENTION_DEAD_LETTERS_DAYS (0: keep them all)."""
    before = retention_cutoff(settings.MODELWORKS_RETENTION_DEAD_LETTERS_DAYS)
    return services.dead_letters_prune(before=before) if before is not None else 0


@shared_task(name="serving.keep_log_partitions", acks_late=True, soft_time_limit=120, time_limit=180, expires=1800)
def keep_log_partitions() -> list[str]:
    """Give the prediction log's coming days (and any day within retention the default partition holds rows of)
    their partitions; the names created. Hourly: a late run is useless, the next one does the same."""
    return partitions.keep_partitions()
