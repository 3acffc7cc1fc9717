"""The feature stores' subject stores (registry/subjects.py): offline values, and the online store (Redis or table).

The offline store is erased first (stores run in registration order): a materialization running meanwhile then has
nothing of the subject's left to copy back online."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from features.models import FeatureValue, FeatureView
from features.online import VALUES_AT, online_store, schema_id
from registry.subjects import Subject, register_store


def _offline(subject: Subject):
    return FeatureValue.objects.filter(entity_key__in=subject.forms)


def _erase_offline(subject: Subject, dry_run: bool) -> dict[str, int]:
    values = _offline(subject)
    return {FeatureValue._meta.db_table: values.count() if dry_run else values.delete()[0]}


def _export_offline(subject: Subject) -> dict[str, list[dict[str, Any]]]:
    rows = _offline(subject).order_by("pk").values("view__name", "entity_key", "event_ts", "created_ts", "data")
    return {FeatureValue._meta.db_table: [{"view": row.pop("view__name"), **row} for row in rows]}


def _online_name() -> str:
    return "redis" if settings.MODELWORKS_FEATURES_ONLINE_STORE == "redis" else "features_onlinevalue"


def _held_online(subject: Subject) -> list[tuple[FeatureView, str, list[Any]]]:
    """(view, entity key, stored row) for every value the online store holds for the subject, in every view."""
    keys = list(subject.forms)
    views = list(FeatureView.objects.order_by("pk"))
    blocks = online_store().read_rows([(view, keys) for view in views]) if views else []
    return [(view, key, row) for view, block in zip(views, blocks, strict=True)
            for key, row in zip(keys, block, strict=True) if row is not None]  # fmt: skip


def _erase_online(subject: Subject, dry_run: bool) -> dict[str, int]:
    if dry_run:
        return {_online_name(): len(_held_online(subject))}
    store = online_store()
    return {_online_name(): sum(store.delete(view, list(subject.forms)) for view in FeatureView.objects.all())}


def _time(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, tz=UTC)


def _export_online(subject: Subject) -> dict[str, list[dict[str, Any]]]:
    held = []
    for view, key, row in _held_online(subject):
        names = view.feature_names if row[2] == schema_id(view) else [f"#{i}" for i in range(len(row) - VALUES_AT)]
        held.append({
            "view": view.name, "entity_key": key,
            "event_ts": _time(row[0]), "created_ts": _time(row[1]),
            "data": dict(zip(names, row[VALUES_AT:], strict=True)),
        })  # fmt: skip
    return {_online_name(): held}


def register() -> None:
    register_store("features_offline", erase=_erase_offline, export=_export_offline)
    register_store("features_online", erase=_erase_online, export=_export_online)
