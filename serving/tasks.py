"""Celery entry points for serving: asynchronous predictions and their callbacks (on MODELWORKS_ASYNC_QUEUE); run by
beat: the log's day partitions, retention of the log, the dead letters and asynchronous results."""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from registry.webhooks.sending import webhook_backoff_s
from serving import asynchronous, partitions, services
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


@shared_task(
    name="serving.run_async_prediction", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=settings.MODELWORKS_ASYNC_TIME_LIMIT_S, time_limit=settings.MODELWORKS_ASYNC_TIME_LIMIT_S + 10,
    expires=settings.MODELWORKS_ASYNC_QUEUE_TIMEOUT_S,
)  # fmt: skip
def run_async_prediction(prediction_id: str) -> bool:
    """Answer one asynchronous prediction as the synchronous endpoint would (queued with `expires`: a request that
    waited past MODELWORKS_ASYNC_QUEUE_TIMEOUT_S is not run; beat's purge fails it)."""
    return asynchronous.async_prediction_run(prediction_id=prediction_id)


@shared_task(
    bind=True, name="serving.deliver_prediction_callback", acks_late=True, reject_on_worker_lost=True,
    max_retries=None, soft_time_limit=30, time_limit=40,
)  # fmt: skip
def deliver_prediction_callback(self: Task, prediction_id: str) -> bool:
    """One attempt; a failed one is re-queued with a countdown, as webhooks are (attempts bounded by the service)."""
    attempt = self.request.retries + 1
    try:
        return asynchronous.async_prediction_callback_attempt(prediction_id=prediction_id, attempt=attempt)
    except asynchronous.RetryLater as exc:
        raise self.retry(countdown=webhook_backoff_s(attempt), exc=exc, queue=settings.MODELWORKS_ASYNC_QUEUE) from exc


@shared_task(name="serving.purge_async_predictions", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=300, time_limit=330, expires=540)  # fmt: skip
def purge_async_predictions() -> dict[str, int]:
    """Fail requests left queued past the queue timeout; delete results past MODELWORKS_ASYNC_RESULT_TTL_S."""
    return asynchronous.async_predictions_purge()


@shared_task(name="serving.keep_log_partitions", acks_late=True, soft_time_limit=120, time_limit=180, expires=1800)
def keep_log_partitions() -> list[str]:
    """Give the prediction log's coming days (and any day within retention the default partition holds rows of)
    their partitions; the names created. Hourly: a late run is useless, the next one does the same."""
    return partitions.keep_partitions()


# --- Batch scoring (serving/batch.py): planning and chunk runners are sent to MODELWORKS_BATCH_QUEUE
# acks_late + reject_on_worker_lost: a message whose worker died is delivered again; the chunk's lease in Postgres,
# not the message, decides who scores it, so a redelivered runner scores at most a chunk nobody holds.


@shared_task(name="serving.batch_plan", acks_late=True, reject_on_worker_lost=True, soft_time_limit=540,
             time_limit=600)  # fmt: skip
def batch_plan(job_id: int) -> int:
    """List the job's input files and cut them into chunks (a CSV is read once, counting lines)."""
    from serving import batch

    return batch.batch_job_plan(job_id=job_id)


_LEASE_S = settings.MODELWORKS_BATCH_CHUNK_LEASE_S
_CHUNK_SOFT_S = max(_LEASE_S - 30, _LEASE_S * 0.8)
# A runner claims chunks for this long, and not past the point where a chunk claimed last could outlive its lease
# before the soft limit stops it.
_RUNNER_S = max(0.0, min(settings.MODELWORKS_BATCH_RUNNER_S, _LEASE_S - _CHUNK_SOFT_S))


@shared_task(name="serving.batch_work", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=_CHUNK_SOFT_S + _RUNNER_S, time_limit=_LEASE_S + _RUNNER_S)  # fmt: skip
def batch_work(job_id: int) -> bool:
    """Score chunks of the job one after another for up to MODELWORKS_BATCH_RUNNER_S, then queue the next runner if
    chunks may be left (so other jobs' runners get the worker in turn); whether it scored one. Each chunk gets its
    whole lease before the hard time limit: a chunk still claimed after its lease has no live worker."""
    from serving import batch

    scored, time_up = batch.batch_work_for(job_id=job_id, seconds=_RUNNER_S)
    if time_up:
        batch_work.apply_async((job_id,), queue=settings.MODELWORKS_BATCH_QUEUE)
    return scored > 0


@shared_task(name="serving.batch_watchdog", acks_late=True, soft_time_limit=50, time_limit=60, expires=50)
def batch_watchdog() -> int:
    from serving import batch

    return batch.batch_watchdog()


@shared_task(name="serving.batch_run_due_schedules", acks_late=True, soft_time_limit=50, time_limit=60, expires=50)
def batch_run_due_schedules() -> int:
    from serving import batch

    return batch.batch_schedules_run_due()
