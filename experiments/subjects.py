"""Experiments' subject store (registry/subjects.py): the first exposures of the subject's routing key."""

from __future__ import annotations

from typing import Any

from experiments.models import Exposure
from registry.subjects import Subject, register_store


def _erase(subject: Subject, dry_run: bool) -> dict[str, int]:
    exposures = Exposure.objects.filter(key__in=subject.forms)
    return {Exposure._meta.db_table: exposures.count() if dry_run else exposures.delete()[0]}


def _export(subject: Subject) -> dict[str, list[dict[str, Any]]]:
    rows = Exposure.objects.filter(key__in=subject.forms).order_by("pk")
    held = [{"experiment": row.pop("experiment__name"), **row}
            for row in rows.values("experiment__name", "key", "arm", "first_seen_at")]  # fmt: skip
    return {Exposure._meta.db_table: held}


def register() -> None:
    register_store("exposures", erase=_erase, export=_export)
