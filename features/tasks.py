"""Celery entry points for the feature store: thin wrappers that load rows by id and call one service."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from features import services
from features.models import FeatureView


@shared_task(
    name="features.materialize_view", acks_late=True, reject_on_worker_lost=True,
    autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3,
    soft_time_limit=600, time_limit=660, expires=300,  # a late run: the 5-minute sweep does the same work
)  # fmt: skip
def materialize_view(view_id: int) -> dict[str, int] | None:
    """Incremental materialization of one view; None when another run holds it."""
    run = services.feature_view_materialize(view=FeatureView.objects.select_related("entity").get(pk=view_id))
    return None if run is None else {"read": run.rows_read, "written": run.rows_written}


@shared_task(
    name="features.materialize_all", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=1200, time_limit=1320, expires=240,
)  # fmt: skip
def materialize_all() -> dict[str, int]:
    """The beat-scheduled sweep: every view, incrementally from its watermark (a rerun finds nothing new)."""
    views = read = written = 0
    for view in FeatureView.objects.select_related("entity").order_by("pk"):
        run = services.feature_view_materialize(view=view)
        if run is not None:
            views, read, written = views + 1, read + run.rows_read, written + run.rows_written
    return {"views": views, "read": read, "written": written}


# No expires: someone asked for this job and its row says "queued" until it runs; a range can be long.
@shared_task(
    name="features.run_materialization_job", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=3600, time_limit=3720,
)  # fmt: skip
def run_materialization_job(job_id: int) -> str:
    """A materialization the console or API asked for; its job row carries the status and progress."""
    from features.models import MaterializationJob

    job = services.materialization_job_run(job=MaterializationJob.objects.select_related("view__entity").get(pk=job_id))
    return job.status
