"""Retention: rows older than a number of days deleted in chunks, on beat (config/settings.py's schedule).

Each app's task calls `delete_older` for its own tables with its own MODELWORKS_RETENTION_*_DAYS; 0 keeps forever."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone


def retention_cutoff(days: int) -> datetime | None:
    """What is older than this goes; None when `days` is 0 (keep everything)."""
    return timezone.now() - timedelta(days=days) if days > 0 else None


def delete_older(rows: QuerySet, field: str, before: datetime, *, chunk: int = 10_000) -> int:
    """Delete the rows whose `field` is before `before`, `chunk` at a time, so a large prune never holds one long
    lock; how many went."""
    deleted = 0
    old = rows.filter(**{f"{field}__lt": before})
    while True:
        with transaction.atomic():
            ids = list(old.values_list("pk", flat=True)[:chunk])
            if not ids:
                return deleted
            deleted += rows.model.objects.filter(pk__in=ids).delete()[0]
