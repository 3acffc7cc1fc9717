"""Subject rights (GDPR): erase or export everything held for one routing key / entity id, in every store.

The stores belong to apps above this one (serving's prediction and shadow log, monitoring's feedback and business
events, experiments' exposures, the feature stores), so each app registers its own in its AppConfig.ready
(`register_store`) and this module imports none of them. Stores that know a subject only through its predictions
(feedback given by request id, shadow copies) find it through `register_request_ids`: every resolver runs before
any store is erased, so the order stores are erased in does not matter.

Each store is erased in its own transaction; a store that fails is named in the receipt and the others still run
(erasing again is harmless: it finds nothing where it already erased). The receipt names the subject by its keyed
hash, never the clear key, and counts rows per table.

Routing keys may be stored as keyed hashes (MODELWORKS_HASH_ROUTING_KEYS=1, the pii features' HMAC key): every
writer stores `stored_key(key)`, so joins between stores still work and the clear key is never at rest. A subject
is looked up under both forms, so rows written before hashing was switched on are found too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

KEY_LENGTH = 200  # as every store's key column: writers truncate to it before hashing


def keyed_hash(value: str) -> str:
    """HMAC-SHA256 of the text under MODELWORKS_PII_HASH_KEY: equal keys still join, but cannot be guessed back."""
    digest = hmac.new(
        settings.MODELWORKS_PII_HASH_KEY.encode(), value.encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()
    return f"hmac:{digest[:32]}"


def stored_key(key: str) -> str:
    """A routing key as the stores keep it: its keyed hash with MODELWORKS_HASH_ROUTING_KEYS on, else itself.
    The empty key (no key) stays empty."""
    if not key or not settings.MODELWORKS_HASH_ROUTING_KEYS:
        return key
    return keyed_hash(key)


@dataclass(frozen=True)
class Subject:
    """Whom a request is about: the key as given, the forms it may be stored under, and the ids of its requests."""

    key: str
    forms: tuple[str, ...]
    request_ids: frozenset[str] = field(default_factory=frozenset)

    @property
    def reference(self) -> str:
        """How receipts and logs name the subject: its keyed hash, whatever the setting."""
        return keyed_hash(self.key[:KEY_LENGTH])


# erase(subject, dry_run) -> rows per table (deleted, or found with dry_run); export(subject) -> rows per table.
EraseFn = Callable[[Subject, bool], dict[str, int]]
ExportFn = Callable[[Subject], dict[str, list[dict[str, Any]]]]
RequestIdsFn = Callable[[Subject], set[str]]


@dataclass(frozen=True)
class Store:
    name: str
    erase: EraseFn
    export: ExportFn


_stores: dict[str, Store] = {}
_request_ids: list[RequestIdsFn] = []


def register_store(name: str, *, erase: EraseFn, export: ExportFn) -> None:
    """Called from an AppConfig.ready; registering a name again replaces it (autoreload runs ready twice). `erase`
    runs in a transaction of its own (a store outside the database, Redis, simply gains nothing from it)."""
    _stores[name] = Store(name, erase, export)


def register_request_ids(resolver: RequestIdsFn) -> None:
    if resolver not in _request_ids:
        _request_ids.append(resolver)


def stores() -> list[Store]:
    return list(_stores.values())


def subject_for(key: str) -> Subject:
    """The subject of `key`, with the ids of the requests made for it (from every registered resolver)."""
    clear = key[:KEY_LENGTH]
    forms = tuple(dict.fromkeys([clear, keyed_hash(clear)]))
    subject = Subject(key=key, forms=forms)
    ids: set[str] = set()
    for resolver in _request_ids:
        ids |= resolver(subject)
    return Subject(key=key, forms=forms, request_ids=frozenset(ids))


def _checked(key: Any) -> str:
    from django.core.exceptions import ValidationError

    if not isinstance(key, str) or not key.strip():
        raise ValidationError({"key": ["give the routing key or entity id, a non-empty string"]})
    if "\x00" in key:
        raise ValidationError({"key": ["must not hold a NUL character"]})
    return key


def subject_erase(
    *, key: str, dry_run: bool = False, actor: Any = None, source: str, request: Any = None
) -> dict[str, Any]:
    """Delete every row held for `key` in every registered store, one transaction per store; the receipt.

    With `dry_run` nothing is deleted: the counts are what would be. A store that fails is listed under "failed"
    with its error, and the others still run; the receipt is written either way (not for a dry run)."""
    subject = subject_for(_checked(key))
    counts: dict[str, dict[str, int]] = {}
    failed: dict[str, str] = {}
    for store in stores():
        try:
            with transaction.atomic():
                counts[store.name] = store.erase(subject, dry_run)
        except Exception as exc:  # one store down must not keep the others from erasing; named in the receipt
            logger.exception("erasing subject %s from %s failed", subject.reference, store.name)
            failed[store.name] = f"{type(exc).__name__}: {exc}"[:500]
    receipt = {
        "action": "subject.erase",
        "subject": subject.reference,
        "dry_run": dry_run,
        "at": timezone.now().isoformat(),
        "counts": counts,
        "total": sum(sum(tables.values()) for tables in counts.values()),
        "failed": failed,
    }
    if not dry_run:
        _write_receipt(receipt, actor, source, request)
    return receipt


def subject_export(*, key: str, actor: Any = None, source: str, request: Any = None) -> dict[str, Any]:
    """Everything held for `key`, per store and table, as JSON-ready rows (times in ISO 8601)."""
    subject = subject_for(_checked(key))
    held = {store.name: store.export(subject) for store in stores()}
    export = {
        "subject": subject.reference,
        "key": subject.key,
        "at": timezone.now().isoformat(),
        "stores": json.loads(json.dumps(held, cls=DjangoJSONEncoder)),
    }
    counts = {name: {table: len(rows) for table, rows in tables.items()} for name, tables in held.items()}
    _write_receipt({"action": "subject.export", "subject": subject.reference, "at": export["at"], "counts": counts},
                   actor, source, request)  # fmt: skip
    return export


def _write_receipt(receipt: dict[str, Any], actor: Any, source: str, request: Any) -> None:
    """The one place a subject-rights receipt is recorded: a row of the audit trail (counts per table; the subject by
    its keyed hash, never the clear key)."""
    from registry import audit

    audit.record(receipt["action"], target=receipt["subject"], before=None, after=receipt, actor=actor,
                 source=source, request=request)  # fmt: skip
