"""Entities and feature views from a declarative spec (the admin, the API and `apply_features` all land here).

`definitions_apply` answers the plan (one readable line per change) and, unless it is a dry run, makes it, in one
transaction. Applying the same spec twice changes nothing. Changes that would reinterpret values already stored
(a feature's type, a view's entity, an entity's key type) are refused.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from config.durations import parse_duration
from features.models import NAME, Entity, FeatureView, ValueType
from features.schema import CREATED_TIMESTAMP, DTYPES, EVENT_TIMESTAMP, FEATURE_NAME
from registry import audit


def parse_ttl(raw: Any) -> int:
    """Seconds from 3600, "3600", "90m", "12h", "30d" or "2w"."""
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise ValidationError({"ttl": [str(exc)]}) from None
    if seconds <= 0:
        raise ValidationError({"ttl": ["must be positive"]})
    return seconds


def _name(raw: Any, field: str) -> str:
    if not isinstance(raw, str):
        raise ValidationError({field: ["must be a string"]})
    try:
        NAME(raw)
    except ValidationError as exc:
        raise ValidationError({field: [f"{raw!r}: {' '.join(exc.messages)}"]}) from None
    return raw


def entity_spec(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationError({"entities": ["each entity must be a mapping with name and join_key"]})
    unknown = set(raw) - {"name", "join_key", "value_type", "description"}
    if unknown:
        raise ValidationError({"entities": [f"unknown keys {', '.join(sorted(unknown))}"]})
    name = _name(raw.get("name"), "entities.name")
    value_type = raw.get("value_type", ValueType.STRING)
    if value_type not in ValueType.values:
        raise ValidationError({f"{name}.value_type": [f"{value_type!r} is not one of {', '.join(ValueType.values)}"]})
    return {
        "name": name,
        "join_key": _name(raw.get("join_key", name + "_id"), f"{name}.join_key"),
        "value_type": value_type,
        "description": str(raw.get("description") or ""),
    }


def view_spec(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationError({"feature_views": ["each view must be a mapping with name, entity, features, ttl"]})
    unknown = set(raw) - {
        "name",
        "entity",
        "features",
        "ttl",
        "owner",
        "description",
        "tags",
        "created_timestamp_column",
    }
    if unknown:
        raise ValidationError({"feature_views": [f"unknown keys {', '.join(sorted(unknown))}"]})
    name = _name(raw.get("name"), "feature_views.name")
    features = raw.get("features")
    if not isinstance(features, list) or not features:
        raise ValidationError({f"{name}.features": ["must be a non-empty list of {name, dtype}"]})
    normalised, seen = [], set()
    for index, feature in enumerate(features):
        where = f"{name}.features[{index}]"
        if not isinstance(feature, dict) or set(feature) - {"name", "dtype", "description"}:
            raise ValidationError({where: ["must be a mapping with name, dtype and optional description"]})
        fname, dtype = feature.get("name"), feature.get("dtype", "float")
        if not isinstance(fname, str) or not FEATURE_NAME.match(fname):
            raise ValidationError({where: [f"name {fname!r}: letters, digits or '_', not starting with a digit"]})
        if fname in seen:
            raise ValidationError({where: [f"'{fname}' appears twice"]})
        if dtype not in DTYPES:
            raise ValidationError({where: [f"dtype {dtype!r} is not one of {', '.join(DTYPES)}"]})
        seen.add(fname)
        normalised.append({"name": fname, "dtype": dtype, "description": str(feature.get("description") or "")})
    tags = raw.get("tags") or {}
    if not isinstance(tags, dict):
        raise ValidationError({f"{name}.tags": ["must be a mapping"]})
    if "ttl" not in raw:
        raise ValidationError({f"{name}.ttl": ["is required"]})
    created_column = raw.get("created_timestamp_column")
    if created_column is None:  # the default name, unless the view has a feature of that name: then none
        created_column = "" if CREATED_TIMESTAMP in seen else CREATED_TIMESTAMP
    elif created_column != "":  # "": no created times, every value is created when written
        created_column = _name(created_column, f"{name}.created_timestamp_column")
    if created_column and created_column in seen:
        raise ValidationError({f"{name}.created_timestamp_column": [f"'{created_column}' is a feature of the view"]})
    if created_column == EVENT_TIMESTAMP:
        raise ValidationError({f"{name}.created_timestamp_column": [f"'{created_column}' is the event time"]})
    return {
        "name": name,
        "entity": _name(raw.get("entity"), f"{name}.entity"),
        "features": normalised,
        "ttl_seconds": parse_ttl(raw["ttl"]),
        "owner": str(raw.get("owner") or ""),
        "description": str(raw.get("description") or ""),
        "tags": {str(k): str(v) for k, v in tags.items()},
        "created_timestamp_column": created_column,
    }


def _diff(current: Any, wanted: dict[str, Any], fields: list[str]) -> list[str]:
    return [field for field in fields if getattr(current, field) != wanted[field]]


ENTITY_AUDITED = ("name", "join_key", "value_type", "description")
VIEW_AUDITED = ("name", "entity", "features", "ttl_seconds", "owner", "description", "tags", "created_timestamp_column")


def _audit(action: str, row: Entity | FeatureView, before: dict[str, Any] | None, fields: tuple[str, ...]) -> None:
    # the actor is the request's user (or the command's), from the audit context
    audit.record(action, target=row, before=before, after=audit.snapshot(row, fields), source=audit.current_source())


def _apply_entity(spec: dict[str, Any], dry_run: bool) -> str | None:
    entity = Entity.objects.select_for_update().filter(name=spec["name"]).first()
    if entity is None:
        if not dry_run:
            entity = Entity.objects.create(**spec)
            _audit("feature_entity.created", entity, None, ENTITY_AUDITED)
        return f"create entity {spec['name']} (join key {spec['join_key']}, {spec['value_type']})"
    changed = _diff(entity, spec, ["join_key", "value_type", "description"])
    if not changed:
        return None
    if {"join_key", "value_type"} & set(changed) and FeatureView.objects.filter(entity=entity, values__isnull=False):
        raise ValidationError({spec["name"]: ["its join key or type cannot change: views of it hold values"]})
    line = f"update entity {spec['name']}: " + ", ".join(f"{f} {getattr(entity, f)!r} -> {spec[f]!r}" for f in changed)
    if not dry_run:
        before = audit.snapshot(entity, ENTITY_AUDITED)
        for field in changed:
            setattr(entity, field, spec[field])
        entity.save()
        _audit("feature_entity.updated", entity, before, ENTITY_AUDITED)
    return line


def _apply_view(spec: dict[str, Any], dry_run: bool, planned_entities: dict[str, str]) -> str | None:
    entity = Entity.objects.filter(name=spec["entity"]).first()
    if entity is None and spec["entity"] not in planned_entities:
        raise ValidationError({f"{spec['name']}.entity": [f"no entity named '{spec['entity']}'"]})
    join_key = planned_entities.get(spec["entity"]) or entity.join_key
    if spec["created_timestamp_column"] and spec["created_timestamp_column"] == join_key:
        raise ValidationError({f"{spec['name']}.created_timestamp_column": [f"'{join_key}' is the entity's join key"]})
    wanted = {**spec, "entity": entity}
    view = FeatureView.objects.select_for_update().filter(name=spec["name"]).first()
    if view is None:
        if not dry_run:
            view = FeatureView.objects.create(**wanted)
            _audit("feature_view.created", view, None, VIEW_AUDITED)
        names = ", ".join(f"{f['name']}:{f['dtype']}" for f in spec["features"])
        return f"create view {spec['name']} on {spec['entity']} (ttl {spec['ttl_seconds']}s): {names}"
    changed = _diff(view, wanted, ["entity", "features", "ttl_seconds", "owner", "description", "tags",
                                   "created_timestamp_column"])  # fmt: skip
    if not changed:
        return None
    details = []
    has_values = view.values.exists()
    if "entity" in changed:
        if has_values:
            raise ValidationError({spec["name"]: ["its entity cannot change: it holds values"]})
        details.append(f"entity {view.entity.name} -> {spec['entity']}")
    if "features" in changed:
        old, new = view.dtypes, {f["name"]: f["dtype"] for f in spec["features"]}
        retyped = [n for n in old.keys() & new.keys() if old[n] != new[n]]
        if retyped and has_values:
            raise ValidationError({spec["name"]: [f"feature types cannot change once values exist: {retyped}"]})
        added, removed = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
        details += (
            [f"+{n}" for n in added] + [f"-{n}" for n in removed] + [f"{n}: {old[n]} -> {new[n]}" for n in retyped]
        )
        if not (added or removed or retyped):
            details.append("feature descriptions or order")
    if "ttl_seconds" in changed:
        details.append(f"ttl {view.ttl_seconds}s -> {spec['ttl_seconds']}s")
    if "created_timestamp_column" in changed:
        old, new = view.created_timestamp_column or "(none)", spec["created_timestamp_column"] or "(none)"
        details.append(f"created timestamp column {old} -> {new}")
    details += [field for field in ("owner", "description", "tags") if field in changed]
    if not dry_run:
        before = audit.snapshot(view, VIEW_AUDITED)
        for field in changed:
            setattr(view, field, wanted[field])
        view.save()
        _audit("feature_view.updated", view, before, VIEW_AUDITED)
    return f"update view {spec['name']}: {', '.join(details)}"


@transaction.atomic
def definitions_apply(*, entities: list[Any], views: list[Any], dry_run: bool = False) -> list[str]:
    """Create or update the given entities and views; answer what changed (or would change), one line each.
    Definitions missing from the spec are left alone."""
    entity_specs = [entity_spec(raw) for raw in entities]
    view_specs = [view_spec(raw) for raw in views]
    for kind, specs in (("entities", entity_specs), ("feature_views", view_specs)):
        names = [spec["name"] for spec in specs]
        if len(names) != len(set(names)):
            raise ValidationError({kind: ["a name appears twice"]})
    plan = [line for spec in entity_specs if (line := _apply_entity(spec, dry_run))]
    planned = {spec["name"]: spec["join_key"] for spec in entity_specs}
    plan += [line for spec in view_specs if (line := _apply_view(spec, dry_run, planned))]
    if dry_run:
        transaction.set_rollback(True)
    return plan
