"""Monitoring's subject stores (registry/subjects.py): feedback (by routing key, or for the subject's requests) and
business events."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from monitoring.models import BusinessEvent, Feedback
from registry.subjects import Subject, register_store


def _feedback(subject: Subject) -> QuerySet[Feedback]:
    return Feedback.objects.filter(Q(routing_key__in=subject.forms) | Q(request_id__in=subject.request_ids))


def _events(subject: Subject) -> QuerySet[BusinessEvent]:
    return BusinessEvent.objects.filter(key__in=subject.forms)


def _erase(queryset: QuerySet, dry_run: bool) -> int:
    return queryset.count() if dry_run else queryset.delete()[0]


def _erase_feedback(subject: Subject, dry_run: bool) -> dict[str, int]:
    return {Feedback._meta.db_table: _erase(_feedback(subject), dry_run)}


def _erase_events(subject: Subject, dry_run: bool) -> dict[str, int]:
    return {BusinessEvent._meta.db_table: _erase(_events(subject), dry_run)}


def _export_feedback(subject: Subject) -> dict[str, list[dict[str, Any]]]:
    fields = ("request_id", "match", "model_name", "version", "routing_key", "actual", "observed_at", "received_at",
              "joined_at")  # fmt: skip
    return {Feedback._meta.db_table: list(_feedback(subject).order_by("pk").values(*fields))}


def _export_events(subject: Subject) -> dict[str, list[dict[str, Any]]]:
    fields = ("key", "name", "value", "occurred_at", "received_at", "event_id")
    return {BusinessEvent._meta.db_table: list(_events(subject).order_by("pk").values(*fields))}


def register() -> None:
    register_store("feedback", erase=_erase_feedback, export=_export_feedback)
    register_store("business_events", erase=_erase_events, export=_export_events)
