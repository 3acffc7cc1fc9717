"""The audit trail: one append-only log of every state change that no domain event log already holds (API keys,
users and grants, serving policies, monitors, feature definitions, alert handling, logins and failed logins).

`record` is the one writer; every app calls it from its services (registry is the lowest app, so all may). Who acted
and how the change arrived come from the call, or else from the request being served: config/request_id.py's
middleware gives each request an id (the client's X-Request-ID when it is sane, echoed back) and sets the context
here for the request's duration, so a service deep in a call needs no request passed down. A management command
sets its own context (`acting("command")`); with none, the source is "system" (beat, workers, migrations).
"""

from __future__ import annotations

import contextvars
import csv
import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from registry.models import AuditEntry, AuditSource

CLIENT_HEADER = "HTTP_X_MODELWORKS_CLIENT"  # sent by modelworks_client: its calls are "client", not raw "api"


@dataclass(frozen=True)
class Context:
    source: str
    request: Any = None  # the Django request being served, if any: its id, address and (lazily) its user
    request_id: str = ""


_context: contextvars.ContextVar[Context | None] = contextvars.ContextVar("modelworks_audit", default=None)


@contextmanager
def acting(source: str, *, request: Any = None, request_id: str = "") -> Iterator[None]:
    """Changes recorded inside come from `source` (and, when given, this request)."""
    token = _context.set(Context(source=source, request=request, request_id=request_id))
    try:
        yield
    finally:
        _context.reset(token)


def source_of(request: Any) -> str:
    """How an HTTP request reached us: the console, the Python client, or the API."""
    if request.path.startswith("/admin/"):
        return AuditSource.ADMIN
    return AuditSource.CLIENT if request.META.get(CLIENT_HEADER) else AuditSource.API


def current_source() -> str:
    context = _context.get()
    return context.source if context is not None else AuditSource.SYSTEM


def _actor_fields(actor: Any) -> dict[str, Any]:
    key = getattr(actor, "key", None)  # serving.auth.ApiKeyUser: a key, not a user
    if key is not None and getattr(actor, "pk", None) is None:
        return {"api_key_id": key.pk, "actor_name": str(getattr(actor, "username", ""))[:150]}
    if getattr(actor, "pk", None) is not None:
        return {"actor_id": actor.pk, "actor_name": str(getattr(actor, "username", "") or actor.pk)[:150]}
    return {"actor_name": "system"}


def _target_fields(target: object | str) -> dict[str, str]:
    meta = getattr(target, "_meta", None)
    if meta is None:
        return {"target": str(target)[:200]}
    return {"target_type": meta.label_lower, "target_id": str(target.pk or "")[:64], "target": str(target)[:200]}


def record(
    action: str,
    *,
    target: object | str,
    before: dict | None,
    after: dict | None,
    actor: Any = None,
    source: str,
    request: Any = None,
) -> AuditEntry:
    """Append one entry: `action` (e.g. "api_key.created") done to `target` (a model instance or a name), the
    state before and after (None for a creation or a deletion), by `actor` (a user, an API key's user, or None:
    the request's user, else the platform). `request` (a Django or DRF request) defaults to the one being served."""
    context = _context.get()
    if request is None and context is not None:
        request = context.request
    request = getattr(request, "_request", request)  # a DRF Request wraps Django's
    if actor is None and request is not None:
        user = getattr(request, "user", None)
        actor = user if getattr(user, "is_authenticated", False) else None
    request_id = getattr(request, "request_id", "") or (context.request_id if context else "")
    remote_addr = request.META.get("REMOTE_ADDR") or None if request is not None else None
    return AuditEntry.objects.create(
        action=action[:50],
        source=source,
        before=before,
        after=after,
        request_id=request_id[:64],
        remote_addr=remote_addr,
        **_actor_fields(actor),
        **_target_fields(target),
    )


def snapshot(instance: Any, fields: Iterable[str]) -> dict[str, Any]:
    """The named fields of a row, as recorded before/after (foreign keys by id)."""
    values = {}
    for name in fields:
        field = instance._meta.get_field(name)
        values[name] = getattr(instance, field.attname)
    return values


def user_snapshot(user: Any) -> dict[str, Any]:
    """What the trail keeps of a user: never the password hash, only when it last changed (`password_changed`)."""
    return {
        "username": user.username,
        "email": user.email,
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "groups": sorted(user.groups.values_list("name", flat=True)) if user.pk else [],
    }


def command(handle):
    """Decorate a management command's `handle`: what it records comes from source "command"."""

    def handled(*args: Any, **kwargs: Any) -> Any:
        with acting(AuditSource.COMMAND):
            return handle(*args, **kwargs)

    return handled


# --- reading, export and retention ------------------------------------------------------------------------------

FILTERS = ("action", "source", "actor", "target_type", "target_id", "request_id", "since", "until")
EXPORT_COLUMNS = ("id", "created_at", "action", "source", "actor_id", "api_key_id", "actor_name", "target_type",
                  "target_id", "target", "before", "after", "request_id", "remote_addr")  # fmt: skip


def entries(
    *, action: str = "", source: str = "", actor: str = "", target_type: str = "", target_id: str = "",
    request_id: str = "", since: datetime | None = None, until: datetime | None = None,
) -> QuerySet[AuditEntry]:  # fmt: skip
    """The trail, newest first, narrowed by what is given. `action` ending in "." is a prefix ("api_key.");
    `actor` is a user's name or id."""
    rows = AuditEntry.objects.all()
    if action:
        rows = rows.filter(action__startswith=action) if action.endswith(".") else rows.filter(action=action)
    if source:
        rows = rows.filter(source=source)
    if actor:
        rows = (
            rows.filter(Q(actor_name=actor) | Q(actor_id=int(actor)))
            if actor.isdigit()
            else rows.filter(actor_name=actor)
        )
    for field, value in (("target_type", target_type), ("target_id", target_id), ("request_id", request_id)):
        if value:
            rows = rows.filter(**{field: value})
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    return rows


def _row(entry: AuditEntry) -> dict[str, Any]:
    return {column: getattr(entry, column) for column in EXPORT_COLUMNS}


def jsonl_lines(rows: QuerySet[AuditEntry]) -> Iterator[bytes]:
    for entry in rows.iterator(chunk_size=2000):
        yield orjson.dumps(_row(entry), option=orjson.OPT_APPEND_NEWLINE)


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text starting like a formula (a failed login's name is anyone's to
    choose) gets a leading quote, as OWASP advises against CSV injection. JSON lines are exact."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def csv_lines(rows: QuerySet[AuditEntry]) -> Iterator[str]:
    """A header, then a line per entry; before/after as JSON text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values: Iterable[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(EXPORT_COLUMNS)
    for entry in rows.iterator(chunk_size=2000):
        row = _row(entry)
        for column in ("before", "after"):
            row[column] = "" if row[column] is None else orjson.dumps(row[column]).decode()
        row["created_at"] = entry.created_at.isoformat()
        yield line(_cell(value) for value in row.values())


def prune(*, days: int | None = None, chunk: int = 10_000) -> int:
    """Delete entries older than `days` (MODELWORKS_AUDIT_RETENTION_DAYS; 0 keeps everything), in chunks; at
    least a day is always kept. The only delete the ORM and the trigger let through."""
    days = settings.MODELWORKS_AUDIT_RETENTION_DAYS if days is None else days
    if days <= 0:
        return 0
    days = max(days, 1)
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    while True:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT set_config('modelworks.audit_prune_days', %s, true)", [str(days)])
            ids = list(AuditEntry.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:chunk])
            if not ids:
                return deleted
            deleted += AuditEntry.objects.filter(pk__in=ids)._raw_delete(AuditEntry.objects.db)


# --- logins ------------------------------------------------------------------------------------------------------


def on_login(sender, request=None, user=None, **kwargs) -> None:
    record("auth.login", target=user, before=None, after=None, actor=user, source=_login_source(request),
           request=request)  # fmt: skip


def on_login_failed(sender, credentials=None, request=None, **kwargs) -> None:
    # Django has already masked secrets in `credentials`; only the name tried is kept.
    username = str((credentials or {}).get("username", ""))[:150]
    record("auth.login_failed", target=username, before=None, after={"username": username},
           actor=None, source=_login_source(request), request=request)  # fmt: skip


def _login_source(request: Any) -> str:
    request = getattr(request, "_request", request)
    return source_of(request) if request is not None and hasattr(request, "path") else current_source()
