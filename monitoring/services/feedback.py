"""Ground truth: store feedback idempotently and join it to the logged predictions, now or when they arrive."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

from config.queueing import enqueue
from monitoring.models import Feedback, FeedbackMatch
from registry.subjects import stored_key
from serving.models import PredictionLog

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedbackItem:
    """One actual outcome: by `request_id`, or by `routing_key` + `time` (optionally narrowed to `model`)."""

    actual: Any
    request_id: str | None = None
    routing_key: str = ""
    model: str = ""
    time: datetime | None = None


def _match_window() -> timedelta:
    return timedelta(seconds=settings.MODELWORKS_FEEDBACK_MATCH_WINDOW_S)


def prediction_for_key(*, routing_key: str, at: datetime, model: str = "") -> PredictionLog | None:
    """The latest logged prediction for this routing key made at or before `at` (within the match window)."""
    logs = PredictionLog.objects.filter(
        routing_key=routing_key, created_at__lte=at, created_at__gte=at - _match_window()
    )
    if model:
        logs = logs.filter(model_name=model)
    return logs.only("request_id").order_by("-created_at", "-id").first()


@transaction.atomic
def feedback_record(*, items: list[FeedbackItem]) -> dict[str, int]:
    """Store ground truth; a repeat of the same request id (or key + model + time) replaces its actual value.

    The join to the prediction log (`feedback_join_pending`) is not done here, on the request path: a
    `monitoring.join_feedback` task is queued once this commits, and beat runs the same task every few minutes for
    feedback whose prediction is not in the log yet (or when the task could not be queued). Reads by request id
    (`monitoring.selectors`) pair feedback with its prediction whether or not it has been joined.
    """
    now = timezone.now()
    # Routing keys are stored (and matched against the log) as MODELWORKS_HASH_ROUTING_KEYS says.
    items = [replace(item, routing_key=stored_key(item.routing_key)) for item in items]
    by_request: dict[str, Feedback] = {}
    for item in items:
        if item.request_id:
            by_request[item.request_id] = Feedback(
                request_id=item.request_id, model_name=item.model, actual=item.actual, observed_at=item.time or now
            )
    if by_request:
        Feedback.objects.bulk_create(
            list(by_request.values()),
            update_conflicts=True,
            unique_fields=["request_id"],
            update_fields=["actual", "observed_at"],
        )
    for item in items:
        if not item.request_id:
            _record_by_key(item, now)
    transaction.on_commit(_queue_join, robust=True)
    return {"received": len(items)}


def _queue_join() -> None:
    """Queue the join; a broker that is down must not fail a request whose feedback is stored (beat joins it)."""
    from monitoring.tasks import join_feedback  # tasks import services: import here, not at module level

    try:
        enqueue(join_feedback)  # bounded in web processes (config/queueing.py)
    except Exception:
        logger.warning("could not queue the feedback join; beat's schedule will run it", exc_info=True)


def _record_by_key(item: FeedbackItem, now: datetime) -> None:
    at = item.time or now
    match_key = f"{item.routing_key}|{item.model}|{at.isoformat()}"
    existing = Feedback.objects.filter(match_key=match_key).first()
    if existing is not None:
        existing.actual = item.actual
        existing.save(update_fields=["actual"])
        return
    log = prediction_for_key(routing_key=item.routing_key, at=at, model=item.model)
    if log is not None:
        # A row for that prediction may already exist (sent by request id): the latest value wins.
        updated = Feedback.objects.filter(request_id=log.request_id).update(actual=item.actual, match_key=match_key)
        if updated:
            return
    try:
        with transaction.atomic():
            Feedback.objects.create(
                request_id=log.request_id if log is not None else None,
                match=FeedbackMatch.ROUTING_KEY,
                match_key=match_key,
                model_name=item.model,
                routing_key=item.routing_key,
                actual=item.actual,
                observed_at=at,
            )
    except IntegrityError:  # the same feedback raced in from another request: it is stored, update its value
        Feedback.objects.filter(match_key=match_key).update(actual=item.actual)


def feedback_join_pending() -> int:
    """Fill model, version and routing key from the prediction log for feedback not joined yet; answer how many."""
    now = timezone.now()
    for pending in Feedback.objects.filter(request_id__isnull=True, joined_at__isnull=True).only(
        "id", "routing_key", "model_name", "observed_at"
    ):
        log = prediction_for_key(routing_key=pending.routing_key, at=pending.observed_at, model=pending.model_name)
        if log is not None:
            try:
                with transaction.atomic():
                    Feedback.objects.filter(pk=pending.pk).update(request_id=log.request_id)
            except IntegrityError:  # that prediction already has feedback sent by its request id, which wins
                Feedback.objects.filter(pk=pending.pk).delete()
    # A client may reuse a request id for other requests: feedback by id joins the latest prediction logged under it
    # (of the model the feedback names, when it names one).
    joined = 0
    for named in (False, True):
        logged = PredictionLog.objects.filter(request_id=OuterRef("request_id")).order_by("-created_at", "-id")
        pending = Feedback.objects.filter(joined_at__isnull=True, request_id__isnull=False)
        if named:
            logged = logged.filter(model_name=OuterRef("model_name"))
            pending = pending.exclude(model_name="")
        else:
            pending = pending.filter(model_name="")
        joined += pending.filter(Exists(logged)).update(
            model_name=Subquery(logged.values("model_name")[:1]),
            version=Subquery(logged.values("version")[:1]),
            routing_key=Subquery(logged.values("routing_key")[:1]),
            joined_at=now,
        )
    return joined


def feedback_prune() -> int:
    """Retention: feedback observed more than MODELWORKS_RETENTION_FEEDBACK_DAYS ago goes (0: kept); how many."""
    from serving.retention import delete_older, retention_cutoff

    before = retention_cutoff(settings.MODELWORKS_RETENTION_FEEDBACK_DAYS)
    return delete_older(Feedback.objects.all(), "observed_at", before) if before is not None else 0
