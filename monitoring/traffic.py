"""Traffic per model, version and minute, rolled up from the prediction log so the console never counts the log.

`traffic_rollup` recounts a trailing window of whole minutes (default the last 15) and replaces their rows in one
transaction: log rows that land a little late (the log is written by a buffer every second or so) are counted at the
next run. Rows written later than the window (buffered through a database outage) reach the charts when the window
is widened: `manage.py rollup_traffic --minutes N`. Minutes the rollup has not reached (the current, unfinished one)
are counted from the log by the readers.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Q
from django.db.models.functions import TruncMinute
from django.utils import timezone

from monitoring.models import TrafficMinute
from serving.models import Outcome, PredictionLog

WINDOW_MINUTES = 15


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _counted(since: datetime, until: datetime, names: list[str] | None = None):
    logs = PredictionLog.objects.filter(created_at__gte=since, created_at__lt=until)
    if names is not None:
        logs = logs.filter(model_name__in=names)
    return (
        logs.annotate(at=TruncMinute("created_at"))
        .values("model_name", "version", "at")
        .annotate(requests=Count("id"), errors=Count("id", filter=~Q(outcome=Outcome.OK)))
        .order_by()
    )


@transaction.atomic
def traffic_rollup(*, now: datetime | None = None, minutes: int = WINDOW_MINUTES) -> int:
    """Recount the last `minutes` whole minutes before `now`; answers the number of rows stored."""
    end = _minute(now or timezone.now())
    start = end - timedelta(minutes=minutes)
    rows = [
        TrafficMinute(
            model_name=row["model_name"],
            version=row["version"],
            minute=row["at"],
            requests=row["requests"],
            errors=row["errors"],
        )
        for row in _counted(start, end)
    ]
    TrafficMinute.objects.filter(minute__gte=start, minute__lt=end).delete()
    TrafficMinute.objects.bulk_create(rows, batch_size=1000)
    return len(rows)


def traffic_per_minute(
    names: list[str], *, since: datetime, now: datetime | None = None
) -> dict[str, dict[int, dict[datetime, tuple[int, int]]]]:
    """Per model name, per version, per minute since `since`: (requests, errors). Whole minutes come from the rollup,
    the minutes it has not reached yet (normally only the current one) from the log."""
    now = now or timezone.now()
    out: dict[str, dict[int, dict[datetime, tuple[int, int]]]] = defaultdict(lambda: defaultdict(dict))
    rolled = TrafficMinute.objects.filter(model_name__in=names, minute__gte=_minute(since))
    latest = None
    for row in rolled.values_list("model_name", "version", "minute", "requests", "errors"):
        name, version, minute, requests, errors = row
        out[name][version][minute] = (requests, errors)
        latest = minute if latest is None or minute > latest else latest
    # The rollup reached `latest` for these models; minutes after it (all of them for models it has no row for
    # yet) come from the log, through its (model_name, version, created_at) index.
    live_from = max(_minute(since), latest + timedelta(minutes=1)) if latest else _minute(since)
    for row in _counted(live_from, now + timedelta(seconds=1), names):
        out[row["model_name"]][row["version"]][row["at"]] = (row["requests"], row["errors"])
    return out


def traffic_totals(names: list[str], *, since: datetime) -> dict[str, tuple[int, int]]:
    """Per model name: (requests, errors) since `since`, from the same figures as traffic_per_minute."""
    totals: dict[str, tuple[int, int]] = {}
    for name, versions in traffic_per_minute(names, since=since).items():
        requests = sum(r for minutes in versions.values() for r, _ in minutes.values())
        errors = sum(e for minutes in versions.values() for _, e in minutes.values())
        totals[name] = (requests, errors)
    return totals
