"""Serving's subject stores (registry/subjects.py): the prediction log, its shadow copies, the dead letters and the
asynchronous predictions (their stored request bodies)."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Q, QuerySet

from registry.subjects import Subject, register_request_ids, register_store
from serving.models import AsyncPrediction, DeadLetter, Outcome, PredictionLog
from serving.shadow import shadow_request_id

_LOG_FIELDS = ("request_id", "model_name", "version", "routing_key", "inputs", "outputs", "latency_ms", "cached",
               "route_reason", "outcome", "created_at")  # fmt: skip


def _predictions(subject: Subject) -> QuerySet[PredictionLog]:
    return PredictionLog.objects.filter(routing_key__in=subject.forms)


def request_ids(subject: Subject) -> set[str]:
    """The ids of the requests made for the subject (feedback and shadow copies are found by them)."""
    return set(_predictions(subject).values_list("request_id", flat=True))


def _shadows(subject: Subject) -> QuerySet[PredictionLog]:
    # A copy is logged with no routing key, under its primary's request id plus "~shadow" (serving/shadow.py).
    ids = {shadow_request_id(primary) for primary in subject.request_ids}
    return PredictionLog.objects.filter(request_id__in=ids, outcome__in=Outcome.shadows())


def _dead_letters(subject: Subject) -> QuerySet[DeadLetter]:
    # Payloads are JSON with sorted keys (serving/background.py), possibly cut short: matched on the key's field.
    match = Q(pk__in=[])
    for form in subject.forms:
        match |= Q(source="prediction_log", payload__contains=f'"routing_key": {json.dumps(form)}')
        match |= Q(source="exposures", payload__contains=f'"key": {json.dumps(form)}')
    for request_id in {shadow_request_id(primary) for primary in subject.request_ids}:
        match |= Q(source="prediction_log", payload__contains=f'"request_id": {json.dumps(request_id)}')
    return DeadLetter.objects.filter(match)


def _async_predictions(subject: Subject) -> QuerySet[AsyncPrediction]:
    """Asynchronous requests sent with the subject's key (their body holds it as sent, until the result expires) or
    answered under one of its request ids. Bodies are bytes, so they are read here: the table holds only requests
    not yet past MODELWORKS_ASYNC_RESULT_TTL_S (beat purges the rest)."""
    forms = set(subject.forms) | {subject.key}
    matched = []
    for pk, request_id, body in AsyncPrediction.objects.values_list("pk", "request_id", "body").iterator():
        if request_id in subject.request_ids:
            matched.append(pk)
            continue
        try:
            payload = json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(payload, dict) and isinstance(payload.get("key"), str) and payload["key"] in forms:
            matched.append(pk)
    return AsyncPrediction.objects.filter(pk__in=matched)


def _erase(queryset: QuerySet, dry_run: bool) -> int:
    return queryset.count() if dry_run else queryset.delete()[0]


def _erase_log(subject: Subject, dry_run: bool) -> dict[str, int]:
    return {PredictionLog._meta.db_table: _erase(_predictions(subject), dry_run)}


def _erase_shadows(subject: Subject, dry_run: bool) -> dict[str, int]:
    return {f"{PredictionLog._meta.db_table} (shadow)": _erase(_shadows(subject), dry_run)}


def _erase_dead_letters(subject: Subject, dry_run: bool) -> dict[str, int]:
    return {DeadLetter._meta.db_table: _erase(_dead_letters(subject), dry_run)}


def _erase_async(subject: Subject, dry_run: bool) -> dict[str, int]:
    return {AsyncPrediction._meta.db_table: _erase(_async_predictions(subject), dry_run)}


def _rows(queryset: QuerySet, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    return list(queryset.order_by("pk").values(*fields))


def _export_log(subject: Subject) -> dict[str, list[dict[str, Any]]]:
    return {PredictionLog._meta.db_table: _rows(_predictions(subject), _LOG_FIELDS)}


def _export_shadows(subject: Subject) -> dict[str, list[dict[str, Any]]]:
    return {f"{PredictionLog._meta.db_table} (shadow)": _rows(_shadows(subject), _LOG_FIELDS)}


def _export_dead_letters(subject: Subject) -> dict[str, list[dict[str, Any]]]:
    return {DeadLetter._meta.db_table: _rows(_dead_letters(subject), ("source", "payload", "error", "created_at"))}


def _export_async(subject: Subject) -> dict[str, list[dict[str, Any]]]:
    rows = []
    for row in _async_predictions(subject).order_by("created_at"):
        try:
            body: Any = json.loads(bytes(row.body))
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = bytes(row.body).decode("utf-8", "replace")
        fields = {"id": str(row.pk), "model_name": row.model_name, "request_id": row.request_id, "status": row.status}
        rows.append({**fields, "body": body, "answer": row.answer, "created_at": row.created_at})
    return {AsyncPrediction._meta.db_table: rows}


def register() -> None:
    register_request_ids(request_ids)
    register_store("prediction_log", erase=_erase_log, export=_export_log)
    register_store("shadow_log", erase=_erase_shadows, export=_export_shadows)
    register_store("dead_letters", erase=_erase_dead_letters, export=_export_dead_letters)
    register_store("async_predictions", erase=_erase_async, export=_export_async)
