"""Business KPI events, stored idempotently by the client's event id when it gives one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from monitoring.models import BusinessEvent
from registry.subjects import stored_key


@dataclass(frozen=True)
class EventItem:
    key: str
    name: str
    value: float = 1.0
    time: datetime | None = None
    event_id: str | None = None


@transaction.atomic
def business_events_record(*, items: list[EventItem]) -> dict[str, int]:
    """Store events; an event id seen before (in this batch or earlier) is a duplicate and changes nothing."""
    now = timezone.now()
    ids = {item.event_id for item in items if item.event_id}
    seen = set(BusinessEvent.objects.filter(event_id__in=ids).values_list("event_id", flat=True))
    rows = []
    for item in items:
        if item.event_id:
            if item.event_id in seen:
                continue
            seen.add(item.event_id)
        rows.append(
            BusinessEvent(
                key=stored_key(item.key),
                name=item.name,
                value=item.value,
                occurred_at=item.time or now,
                event_id=item.event_id,
            )
        )
    # ignore_conflicts covers a concurrent request storing the same event id between our read and this insert.
    BusinessEvent.objects.bulk_create(rows, ignore_conflicts=True)
    return {"received": len(items), "stored": len(rows), "duplicates": len(items) - len(rows)}


def business_events_prune() -> int:
    """Retention: events that occurred more than MODELWORKS_RETENTION_EVENTS_DAYS ago go (0: kept); how many."""
    from serving.retention import delete_older, retention_cutoff

    before = retention_cutoff(settings.MODELWORKS_RETENTION_EVENTS_DAYS)
    return delete_older(BusinessEvent.objects.all(), "occurred_at", before) if before is not None else 0
