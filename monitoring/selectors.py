"""Monitoring reads for other apps (rollouts, experiments) and the admin: quality from ground truth, business events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Avg, Count, Exists, F, Func, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum
from django.utils import timezone

from monitoring import quality
from monitoring.models import BusinessEvent, DriftReport, Feedback, OodProfile
from registry.models import ModelVersion, Task
from serving.models import Outcome, PredictionLog, logged_outputs


@dataclass
class Joined:
    """Logged predictions paired row by row with their actual outcomes."""

    actual: list[Any] = field(default_factory=list)
    predicted: list[Any] = field(default_factory=list)
    probabilities: list[list[float]] = field(default_factory=list)
    mismatched: int = 0

    def add(self, outputs: dict[str, Any], actual: Any) -> None:
        predictions, probabilities = logged_outputs(outputs)
        actuals = actual if isinstance(actual, list) else [actual]
        if len(actuals) != len(predictions):
            self.mismatched += 1  # a request of n rows needs n actual values
            return
        self.actual.extend(actuals)
        self.predicted.extend(predictions)
        self.probabilities.extend(probabilities if probabilities is not None else [None] * len(predictions))


def predictions_with_feedback(model_name: str, *, since: datetime | None = None) -> QuerySet[PredictionLog]:
    """The prediction each feedback given by request id is about: the latest one of this model logged under that id
    (a client reusing request ids has its feedback paired with its most recent request, as feedback_join_pending
    joins it), so every feedback counts once. With `since`, only predictions from then on: the lookup per feedback
    then reads only those days of the partitioned log (the latest prediction is the same whenever it is that recent).
    """
    latest = PredictionLog.objects.filter(model_name=model_name, request_id=OuterRef("request_id"))
    if since is not None:
        latest = latest.filter(created_at__gte=since)
    latest = latest.order_by("-created_at", "-id").values("pk")[:1]
    about = Feedback.objects.filter(Q(model_name=model_name) | Q(model_name=""), request_id__isnull=False)
    return PredictionLog.objects.filter(pk__in=about.annotate(prediction=Subquery(latest)).values("prediction"))


def joined_feedback(
    model_name: str, version: int, since: datetime | None = None, until: datetime | None = None
) -> Joined:
    """Predictions of one version made in [since, until) that have feedback, paired with it (mirrored shadow copies
    are never a version's predictions: a client never saw them)."""
    logs = predictions_with_feedback(model_name, since=since).filter(version=version)
    logs = logs.exclude(outcome__in=Outcome.shadows())
    if since is not None:
        logs = logs.filter(created_at__gte=since)
    if until is not None:
        logs = logs.filter(created_at__lt=until)
    outputs = dict(logs.values_list("request_id", "outputs").iterator(chunk_size=5000))
    joined = Joined()
    for request_id, actual in Feedback.objects.filter(request_id__in=list(outputs)).values_list("request_id", "actual"):
        joined.add(outputs[request_id], actual)
    return joined


def quality_metrics(
    model_name: str, version: int, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """Quality of one version from ground truth over predictions made in [since, until).

    {"task", "n", "requests_mismatched", and accuracy/precision/recall/f1/roc_auc or mae/rmse/r2}; metrics are None
    when no feedback has joined yet. ROC-AUC uses the logged probabilities in the version's class order.
    """
    row = ModelVersion.objects.select_related("model").get(model__name=model_name, version=version)
    joined = joined_feedback(model_name, version, since, until)
    task = row.model.task
    names = quality.REGRESSION_METRICS if task == Task.REGRESSION else quality.CLASSIFICATION_METRICS
    result: dict[str, Any] = {"task": task, "n": len(joined.actual), "requests_mismatched": joined.mismatched}
    result.update(dict.fromkeys(names))
    if not joined.actual:
        return result
    if task == Task.REGRESSION:
        result.update(quality.regression_metrics(joined.actual, joined.predicted))
    else:
        probabilities = joined.probabilities if all(p is not None for p in joined.probabilities) else None
        classes = (row.signature.get("outputs") or {}).get("classes")
        result.update(quality.classification_metrics(joined.actual, joined.predicted, probabilities, classes))
    return result


def business_events(
    name: str, keys: list[str] | None = None, since: datetime | None = None, until: datetime | None = None
) -> QuerySet[BusinessEvent]:
    """Events named `name` that occurred in [since, until), optionally only for these routing keys."""
    events = BusinessEvent.objects.filter(name=name)
    if keys is not None:
        events = events.filter(key__in=keys)
    if since is not None:
        events = events.filter(occurred_at__gte=since)
    if until is not None:
        events = events.filter(occurred_at__lt=until)
    return events.order_by("occurred_at", "id")


def business_event_totals(
    name: str, keys: list[str] | None = None, since: datetime | None = None, until: datetime | None = None
) -> dict[str, dict[str, float]]:
    """Per routing key: how many events, their sum and mean value."""
    rows = business_events(name, keys, since, until).order_by().values("key")
    rows = rows.annotate(n=Count("id"), total=Sum("value"), mean=Avg("value"))
    return {row["key"]: {"n": row["n"], "sum": row["total"], "mean": row["mean"]} for row in rows}


def latest_reports(model_name: str, limit: int = 50) -> QuerySet[DriftReport]:
    return DriftReport.objects.filter(model_name=model_name).select_related("monitor").order_by("-created_at")[:limit]


def business_impact(model_name: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """Business events attributable to a model: those whose routing key the model served predictions for.

    Per event name: events, distinct keys, sum and mean value (since `since`, for both predictions and events).
    """
    # One probe of the log's key index per event (events are the small side), never a scan of the model's log.
    logs = PredictionLog.objects.filter(model_name=model_name, routing_key=OuterRef("key")).exclude(routing_key="")
    events = BusinessEvent.objects.exclude(key="")
    if since is not None:
        logs = logs.filter(created_at__gte=since)
        events = events.filter(occurred_at__gte=since)
    rows = (
        events.filter(Exists(logs))
        .order_by()
        .values("name")
        .annotate(events=Count("id"), keys=Count("key", distinct=True), total=Sum("value"), mean=Avg("value"))
        .order_by("name")
    )
    return list(rows)


def ood_summary(model_name: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """Per version of the model, from the prediction log since `since` (default: the last 24 hours): requests and rows
    scored for out-of-distribution, rows flagged (outside the reference), and the profile's refusal threshold.
    Refused requests are not in the log (they were never answered): modelworks_ood_rows_total counts them."""
    since = since or timezone.now() - timedelta(hours=24)
    logs = (
        PredictionLog.objects.filter(model_name=model_name, created_at__gte=since, ood_scores__isnull=False)
        .exclude(outcome__in=Outcome.shadows())
        .values("version")
        .annotate(
            requests=Count("id"),
            rows=Sum(Func(F("ood_scores"), function="jsonb_array_length", output_field=IntegerField())),
            flagged=Sum("ood_flagged"),
        )
        .order_by("-version")
    )
    thresholds = dict(
        OodProfile.objects.filter(version__model__name=model_name).values_list("version__version", "refuse_above")
    )
    return [{**row, "refuse_above": thresholds.get(row["version"])} for row in logs]
