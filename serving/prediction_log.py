"""The prediction log: every prediction written to Postgres off the request path, in bulk.

Requests append to an in-process buffer; a background thread bulk-inserts it every MODELWORKS_LOG_FLUSH_MS (or
sooner when it fills). Inserts ignore request ids already stored, so a retried flush never duplicates. The buffer
does not depend on Redis at all, and survives the database being briefly down: failed flushes keep the rows and
retry. A clean shutdown (gunicorn worker exit, SIGTERM, interpreter exit) flushes what is left. What a crash can
lose: at most the rows buffered since the last flush, by default a quarter second of traffic (README).
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import io
import logging
from collections import deque
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from django.conf import settings
from django.db import connection, transaction

from serving import metrics
from serving.background import BackgroundFlusher
from serving.models import PredictionLog
from serving.per_process import PerProcess

logger = logging.getLogger(__name__)


def pii_hash(value: Any) -> str:
    """A keyed hash, so equal values still join up in analysis but cannot be reversed by guessing."""
    digest = hmac.new(settings.MODELWORKS_PII_HASH_KEY.encode(), repr(value).encode(), hashlib.sha256).hexdigest()
    return f"hmac:{digest[:32]}"


def masked_inputs(rows: list[list[Any]], signature: dict[str, Any]) -> list[dict[str, Any]]:
    features = signature["inputs"]
    pii = {i for i, f in enumerate(features) if f.get("pii")}
    return [
        {
            f["name"]: (pii_hash(v) if i in pii and v is not None else v)
            for i, (f, v) in enumerate(zip(features, row, strict=True))
        }
        for row in rows
    ]


class LogEntry(NamedTuple):
    """One prediction-log row as buffered: a plain tuple, since a model instance per request costs ~10 us."""

    request_id: str
    model_name: str
    version: int
    routing_key: str
    inputs: Any
    outputs: Any
    latency_ms: float
    cached: bool
    route_reason: str
    outcome: str
    created_at: datetime


_COLUMNS = ("request_id", "model_name", "version", "routing_key", "inputs", "outputs", "latency_ms", "cached",
            "route_reason", "outcome", "created_at")  # fmt: skip
_INSERT = (
    "INSERT INTO serving_predictionlog (request_id, model_name, version, routing_key, inputs, outputs, latency_ms,"
    " cached, route_reason, outcome, created_at) VALUES %s ON CONFLICT (request_id) DO NOTHING"
)


def _as_model(entry: LogEntry | PredictionLog) -> PredictionLog:
    return PredictionLog(**entry._asdict()) if isinstance(entry, LogEntry) else entry


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


_COPY = f"COPY serving_predictionlog ({', '.join(_COLUMNS)}) FROM STDIN"


def insert(entries: list[LogEntry | PredictionLog]) -> None:
    """Insert log rows, skipping request ids already stored (so a retried flush never duplicates)."""
    if connection.vendor != "postgresql":
        PredictionLog.objects.bulk_create([_as_model(e) for e in entries], ignore_conflicts=True)
        return
    # On Postgres, COPY: measured at about a third of a multi-row INSERT's client CPU per row and half its time
    # overall, and this runs on a thread that shares the GIL (and the cores) with request handling. COPY cannot skip
    # duplicates, so a batch holding a request id already stored (a client retrying with its X-Request-ID) is written
    # again by the INSERT that can.
    import psycopg2.errors

    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.cursor.copy_expert(_COPY, io.StringIO(copy_text(entries)))  # the raw psycopg2 cursor
    except psycopg2.errors.UniqueViolation:
        _insert_skipping_duplicates(entries)


def copy_text(entries: list[LogEntry | PredictionLog]) -> str:
    """The rows in COPY's text format: tab-separated, one line each, backslash escapes."""
    lines = []
    for e in entries:
        fields = (
            _text(e.request_id), _text(e.model_name), str(e.version), _text(e.routing_key),
            _json(e.inputs).replace("\\", "\\\\"), _json(e.outputs).replace("\\", "\\\\"), repr(float(e.latency_ms)),
            "t" if e.cached else "f", _text(e.route_reason), _text(e.outcome), e.created_at.isoformat(),
        )  # fmt: skip
        lines.append("\t".join(fields))
    lines.append("")
    return "\n".join(lines)


def _text(value: str) -> str:
    # Postgres text cannot hold NUL; JSON text never has raw control characters (the encoder escapes them).
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value or "\x00" in value:
        value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        value = value.replace("\x00", "")
    return value


def _insert_skipping_duplicates(entries: list[LogEntry | PredictionLog]) -> None:
    from psycopg2.extras import execute_values

    rows = [
        tuple(_json(getattr(e, c)) if c in ("inputs", "outputs") else getattr(e, c) for c in _COLUMNS) for e in entries
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        execute_values(cursor.cursor, _INSERT, rows, page_size=len(rows))


class PredictionLogBuffer(BackgroundFlusher):
    thread_name = "prediction-log"

    def __init__(self, *, flush_seconds: float, max_rows: int, batch_rows: int = 1000) -> None:
        super().__init__(flush_seconds=flush_seconds)
        self.max_rows = max_rows
        self.batch_rows = batch_rows
        self._rows: deque[LogEntry | PredictionLog] = deque()

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, entry: LogEntry | PredictionLog) -> None:
        with self._lock:
            if len(self._rows) >= self.max_rows:
                self._rows.popleft()
                metrics.LOG_DROPPED.inc()
            self._rows.append(entry)
            depth = len(self._rows)
        metrics.LOG_BUFFER_DEPTH.set(depth)
        self._ensure_thread()
        if depth >= self.batch_rows:
            self.wake()

    def flush(self) -> int:
        """Write everything buffered now; rows whose insert fails go back to the front for the next try."""
        written = 0
        with self._flush_lock:
            while True:
                with self._lock:
                    batch = [self._rows.popleft() for _ in range(min(self.batch_rows, len(self._rows)))]
                if not batch:
                    break
                try:
                    insert(batch)
                except Exception:
                    logger.exception("prediction log flush failed; %d rows kept for the next try", len(batch))
                    with self._lock:
                        self._rows.extendleft(reversed(batch))
                    break
                written += len(batch)
                metrics.LOG_WRITTEN.inc(len(batch))
        metrics.LOG_BUFFER_DEPTH.set(len(self._rows))
        return written


def _new_buffer() -> PredictionLogBuffer:
    buffer = PredictionLogBuffer(
        flush_seconds=settings.MODELWORKS_LOG_FLUSH_MS / 1000, max_rows=settings.MODELWORKS_LOG_BUFFER_MAX
    )
    atexit.register(buffer.close)
    return buffer


# This process's buffer: `prediction_log()`.
prediction_log = PerProcess(_new_buffer)
