"""Per-arm metric data for an experiment, read from monitoring's feedback and business events.

Each reader answers, per arm, the moments (n, mean, sum of squared deviations) of one value per unit, overall and per
day:
- conversion: per exposed key, 1 if the key had the business event after its first exposure, else 0;
- mean_value: per exposed key, the summed value of the event after its first exposure (0 without one);
- quality: per prediction the arm served that has feedback, 1 if correct (classifiers) or the absolute error
  (regressors, lower is better). Its unit is the prediction, not the key: a key with many predictions weighs more.
Events count from a key's first exposure until the experiment stopped. Aggregation happens in the database: COUNT,
AVG and VAR_POP per arm and day (Django registers VAR_POP on SQLite too), never a sum of squares, whose difference
E[x^2] - E[x]^2 loses the variance when values are large next to their spread.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from django.db.models import Avg, Case, Count, Exists, FloatField, OuterRef, Subquery, Sum, Value, Variance, When
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from experiments.models import Experiment, Exposure, MetricKind
from experiments.stats import Moments
from monitoring.models import BusinessEvent, Feedback
from monitoring.selectors import Joined, predictions_with_feedback
from registry.models import Task
from serving.models import RouteReason


@dataclass
class MetricData:
    binary: bool
    lower_is_better: bool
    label: str
    total: dict[str, Moments] = field(default_factory=dict)
    daily: dict[str, dict[date, Moments]] = field(default_factory=dict)  # not cumulative


def metric_label(spec: dict[str, Any], task: str) -> str:
    if spec["kind"] == MetricKind.CONVERSION:
        return f"conversion to '{spec['event']}'"
    if spec["kind"] == MetricKind.MEAN_VALUE:
        return f"mean '{spec['event']}' value per key"
    return "accuracy (feedback)" if task == Task.CLASSIFICATION else "absolute error (feedback)"


def metric_data(
    experiment: Experiment, spec: dict[str, Any], arm_names: list[str], since: datetime | None = None
) -> MetricData:
    """The metric per arm; with `since`, only keys first exposed from then on (quality: predictions made since)."""
    task = experiment.model.task
    if spec["kind"] == MetricKind.QUALITY:
        data = MetricData(task == Task.CLASSIFICATION, task != Task.CLASSIFICATION, metric_label(spec, task))
        rows = _quality_rows(experiment, arm_names, classification=task == Task.CLASSIFICATION, since=since)
    else:
        data = MetricData(spec["kind"] == MetricKind.CONVERSION, False, metric_label(spec, task))
        rows = _event_rows(experiment, spec, since=since)
    for name in arm_names:
        data.total[name], data.daily[name] = Moments(0, 0.0, 0.0), {}
    for arm, day, moments in rows:
        if arm not in data.total:
            continue  # an arm that no longer exists cannot be compared
        data.daily[arm][day] = data.daily[arm].get(day, Moments(0, 0.0, 0.0)) + moments
        data.total[arm] = data.total[arm] + moments
    return data


def _event_rows(experiment: Experiment, spec: dict[str, Any], *, since: datetime | None) -> list[tuple]:
    events = BusinessEvent.objects.filter(
        key=OuterRef("key"), name=spec["event"], occurred_at__gte=OuterRef("first_seen_at")
    )
    if experiment.stopped_at is not None:
        events = events.filter(occurred_at__lte=experiment.stopped_at)
    if spec["kind"] == MetricKind.CONVERSION:
        value = Case(When(Exists(events), then=Value(1.0)), default=Value(0.0), output_field=FloatField())
    else:
        summed = events.order_by().values("key").annotate(total=Sum("value")).values("total")[:1]
        value = Coalesce(Subquery(summed, output_field=FloatField()), Value(0.0))
    exposed = Exposure.objects.filter(experiment=experiment)
    if since is not None:
        exposed = exposed.filter(first_seen_at__gte=since)
    rows = (
        exposed.annotate(value=value, day=TruncDate("first_seen_at"))
        .values("arm", "day")
        .annotate(n=Count("id"), mean=Avg("value"), var_pop=Variance("value", sample=False))
        .values_list("arm", "day", "n", "mean", "var_pop")
    )
    return [(arm, day, Moments.of_group(n, mean, var_pop)) for arm, day, n, mean, var_pop in rows]


def _quality_rows(
    experiment: Experiment, arm_names: list[str], *, classification: bool, since: datetime | None
) -> list[tuple]:
    """Predictions the experiment routed to each arm, paired with their feedback, one value per predicted row."""
    prefix = RouteReason.routed_by(experiment.route_owner)
    logs = predictions_with_feedback(experiment.model.name, since=since).filter(
        route_reason__in=[experiment.arm_reason(name) for name in arm_names]
    )
    if since is not None:
        logs = logs.filter(created_at__gte=since)
    logs = logs.values_list("request_id", "route_reason", "outputs", "created_at")
    logged = {request_id: (reason, outputs, at) for request_id, reason, outputs, at in logs.iterator(chunk_size=5000)}
    buckets: dict[tuple[str, date], list[float]] = defaultdict(list)
    actuals = Feedback.objects.filter(request_id__in=list(logged)).values_list("request_id", "actual")
    for request_id, actual in actuals.iterator(chunk_size=5000):
        reason, outputs, at = logged[request_id]
        joined = Joined()
        joined.add(outputs, actual)
        values = buckets[(reason.removeprefix(prefix), timezone.localdate(at))]
        for truth, predicted in zip(joined.actual, joined.predicted, strict=True):
            value = float(truth == predicted) if classification else _absolute_error(truth, predicted)
            if not math.isnan(value):
                values.append(value)
    return [(arm, day, Moments.of(v)) for (arm, day), v in buckets.items() if v]


def _absolute_error(truth: Any, predicted: Any) -> float:
    try:
        return abs(float(truth) - float(predicted))
    except (TypeError, ValueError):
        return math.nan  # a non-numeric actual for a regressor: the request's feedback is unusable
