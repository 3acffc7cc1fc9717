"""The prediction log: every prediction written to Postgres off the request path, in bulk.

Requests append to an in-process buffer; a background thread bulk-inserts it every MODELWORKS_LOG_FLUSH_MS (or
sooner when it fills). Inserts skip a row already stored for the same request (same request id, model, outcome and
logged inputs within MODELWORKS_LOG_RETRY_WINDOW_S: `retry_key`), so a retried flush or a client's retry never
duplicates, while a client reusing one id for different bodies gets a row for each. The buffer does not depend on
Redis at all, and survives the database being briefly down: flushes failing on the database keep the rows and retry,
within MODELWORKS_LOG_BUFFER_MAX rows and MODELWORKS_LOG_BUFFER_MAX_BYTES (past either the oldest are dropped and
counted). A batch refused for its content is split until the guilty rows stand alone: they go to the dead letters
(serving/background.py), every other row is written. A clean shutdown flushes what is left: a web worker's, on
SIGTERM (after answering the requests in flight), SIGINT or SIGQUIT, in gunicorn's `worker_exit`
(platform/gunicorn.conf.py; config/web_worker.py says how the worker gets there), any other process's at
interpreter exit. The flush is bounded (the worker's `exit_seconds`, 5 s by default): rows a hung or absent
database cannot take by then go to the dead-letter file. What a crash (SIGKILL, OOM) can lose: at most the rows
buffered since the last flush, by default 50 ms of traffic (README).
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
from serving.background import BackgroundFlusher, store_dead_letters, write_isolating
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
    caller: str = ""  # "key:<id>" or "user:<id>": who called (the audit trail joins on request_id)
    ood_scores: list[float] | None = None  # per row, against the version's OOD profile (None: not scored)
    ood_flagged: int | None = None  # rows scored above 1 (outside the reference)


_COLUMNS = ("request_id", "model_name", "version", "routing_key", "inputs", "outputs", "latency_ms", "cached",
            "route_reason", "outcome", "created_at", "caller", "ood_scores", "ood_flagged")  # fmt: skip
_INSERT = (
    "INSERT INTO serving_predictionlog (request_id, model_name, version, routing_key, inputs, outputs, latency_ms,"
    " cached, route_reason, outcome, created_at, caller, ood_scores, ood_flagged, retry_key) VALUES %s"
    # No conflict target: on the partitioned log the per-request unique index is each day's own (serving/partitions.py).
    " ON CONFLICT DO NOTHING"
)


def retry_key(entry: LogEntry | PredictionLog, inputs_json: str | None = None) -> str:
    """What makes two log rows of one request id the same request: its outcome, its logged inputs and the retry
    window it fell in (a retry straddling a window boundary is logged twice, never dropped)."""
    window = int(entry.created_at.timestamp() // max(settings.MODELWORKS_LOG_RETRY_WINDOW_S, 1))
    inputs_json = _json(entry.inputs) if inputs_json is None else inputs_json
    # surrogatepass: an entry is keyed even when its text cannot be stored (the write then refuses it by itself).
    text = f"{entry.outcome}\x1f{window}\x1f{inputs_json}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).hexdigest()[:32]


def _as_model(entry: LogEntry | PredictionLog) -> PredictionLog:
    row = PredictionLog(**entry._asdict()) if isinstance(entry, LogEntry) else entry
    row.retry_key = retry_key(row)
    return row


def as_dict(entry: LogEntry | PredictionLog) -> dict[str, Any]:
    return {column: getattr(entry, column) for column in _COLUMNS}


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


_JSON_COLUMNS = ("inputs", "outputs", "ood_scores")
_COPY = f"COPY serving_predictionlog ({', '.join(_COLUMNS)}, retry_key) FROM STDIN"


def insert(entries: list[LogEntry | PredictionLog]) -> None:
    """Insert log rows, skipping requests already stored (so a retried flush never duplicates); all or nothing.

    Raises on a row the database cannot take (TypeError/ValueError/DataError: see background.is_data_error)."""
    if connection.vendor != "postgresql":
        PredictionLog.objects.bulk_create([_as_model(e) for e in entries], ignore_conflicts=True)
        return
    # On Postgres, COPY: measured at about a third of a multi-row INSERT's client CPU per row and half its time
    # overall, and this runs on a thread that shares the GIL (and the cores) with request handling. COPY cannot skip
    # duplicates, so a batch holding a request already stored (a client retrying with its X-Request-ID) is written
    # again by the INSERT that can. Encoded here, so a lone surrogate is a UnicodeEncodeError before any byte is sent
    # (inside COPY psycopg2 reports it as QueryCanceled, an OperationalError, as if the database were away).
    import psycopg2.errors

    data = copy_text(entries).encode()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            # The raw psycopg2 cursor, handed the batch in one read: by default it reads 8 KiB at a time, and each
            # read takes the GIL back from the request threads (waiting up to the 5 ms switch interval for it), so a
            # flush of a few thousand rows took a second of waits and cut into the request processor's rounds.
            cursor.cursor.copy_expert(_COPY, io.BytesIO(data), size=max(len(data), 8192))
    except psycopg2.errors.UniqueViolation:
        _insert_skipping_duplicates(entries)


def copy_text(entries: list[LogEntry | PredictionLog]) -> str:
    """The rows in COPY's text format: tab-separated, one line each, backslash escapes."""
    lines = []
    for e in entries:
        inputs = _json(e.inputs)
        fields = (
            _text(e.request_id), _text(e.model_name), str(e.version), _text(e.routing_key),
            inputs.replace("\\", "\\\\"), _json(e.outputs).replace("\\", "\\\\"), repr(float(e.latency_ms)),
            "t" if e.cached else "f", _text(e.route_reason), _text(e.outcome), e.created_at.isoformat(),
            _text(e.caller), _nullable_json(e.ood_scores), r"\N" if e.ood_flagged is None else str(e.ood_flagged),
            retry_key(e, inputs),
        )  # fmt: skip
        lines.append("\t".join(fields))
    lines.append("")
    return "\n".join(lines)


def _nullable_json(value: Any) -> str:
    return r"\N" if value is None else _json(value)  # COPY's NULL, not JSON's null


def _text(value: str) -> str:
    # Postgres text cannot hold NUL; JSON text never has raw control characters (the encoder escapes them).
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value or "\x00" in value:
        value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        value = value.replace("\x00", "")
    return value


def _insert_skipping_duplicates(entries: list[LogEntry | PredictionLog]) -> None:
    from psycopg2.extras import execute_values

    rows = [
        (
            *(
                _json(getattr(e, c)) if c in _JSON_COLUMNS and getattr(e, c) is not None else getattr(e, c)
                for c in _COLUMNS
            ),
            retry_key(e),
        )  # fmt: skip
        for e in entries
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        execute_values(cursor.cursor, _INSERT, rows, page_size=len(rows))


def entry_bytes(entry: LogEntry | PredictionLog) -> int:
    """An estimate of what a buffered entry holds in memory (Python objects, not the JSON written), cheap enough for
    the request path (~1 us for a 30-feature row): every input value and text length counted, outputs estimated from
    their first item (the model's own answers, so regular)."""
    total = 600 + len(entry.request_id) + len(entry.routing_key) + _inputs_size(entry.inputs)
    outputs = entry.outputs
    if isinstance(outputs, dict):
        total += sum(64 + _list_size(v) for v in outputs.values())
    return total


def _inputs_size(rows: Any) -> int:
    if not isinstance(rows, list):
        return _list_size(rows)
    total = 56 + 8 * len(rows)
    for row in rows:
        if type(row) is dict:
            total += 64 + 48 * len(row)
            texts = [v for v in row.values() if type(v) is str]
            if texts:
                total += sum(map(len, texts))
        else:
            total += _list_size(row)
    return total


def _list_size(value: Any) -> int:
    if isinstance(value, str):
        return 50 + len(value)
    if isinstance(value, (list, tuple)):
        return 56 + len(value) * (8 + _list_size(value[0])) if value else 56
    if isinstance(value, dict):
        return 64 + sum(48 + _list_size(v) for v in value.values())
    return 32


class PredictionLogBuffer(BackgroundFlusher):
    thread_name = "prediction-log"
    source = "prediction_log"  # its rows' name in the dead letters

    def __init__(
        self, *, flush_seconds: float, max_rows: int, batch_rows: int = 1000, max_bytes: int = 256 * 1024 * 1024
    ) -> None:
        super().__init__(flush_seconds=flush_seconds)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.batch_rows = batch_rows
        self.dropped = 0
        self._rows: deque[LogEntry | PredictionLog] = deque()
        self._sizes: deque[int] = deque()  # entry_bytes of each row, in step with _rows
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def append(self, entry: LogEntry | PredictionLog) -> None:
        size = entry_bytes(entry)
        with self._lock:
            dropped = 0
            while self._rows and (len(self._rows) >= self.max_rows or self._bytes + size > self.max_bytes):
                self._rows.popleft()
                self._bytes -= self._sizes.popleft()
                dropped += 1
            self._rows.append(entry)
            self._sizes.append(size)
            self._bytes += size
            self.dropped += dropped
            depth, held = len(self._rows), self._bytes
        if dropped:
            metrics.LOG_DROPPED.inc(dropped)
        metrics.LOG_BUFFER_DEPTH.set(depth)
        metrics.LOG_BUFFER_BYTES.set(held)
        self._ensure_thread()
        if depth >= self.batch_rows:
            self.wake()

    def flush(self) -> int:
        """Write everything buffered now. Rows the database refuses for their content become dead letters; when the
        database itself fails, the rows not written go back to the front for the next try."""
        written = 0
        with self._flush_lock:
            while True:
                with self._lock:
                    count = min(self.batch_rows, len(self._rows))
                    batch = [self._rows.popleft() for _ in range(count)]
                    self._bytes -= sum(self._sizes.popleft() for _ in range(count))
                if not batch:
                    break
                outcome = write_isolating(batch, insert)
                written += outcome.written
                metrics.LOG_WRITTEN.inc(outcome.written)
                store_dead_letters(self.source, [(as_dict(e), error) for e, error in outcome.refused])
                if outcome.kept:
                    logger.error("prediction log flush failed; %d rows kept for the next try", len(outcome.kept),
                                 exc_info=outcome.error)  # fmt: skip
                    self._put_back(outcome.kept)
                    break
        metrics.LOG_BUFFER_DEPTH.set(len(self._rows))
        metrics.LOG_BUFFER_BYTES.set(self._bytes)
        return written

    def unwritten(self) -> list[dict[str, Any]]:
        with self._lock:
            rows, self._rows, self._sizes, self._bytes = list(self._rows), deque(), deque(), 0
        metrics.LOG_BUFFER_DEPTH.set(0)
        metrics.LOG_BUFFER_BYTES.set(0)
        return [as_dict(entry) for entry in rows]

    def _put_back(self, rows: list[LogEntry | PredictionLog]) -> None:
        sizes = [entry_bytes(e) for e in rows]
        with self._lock:
            self._rows.extendleft(reversed(rows))
            self._sizes.extendleft(reversed(sizes))
            self._bytes += sum(sizes)


def _new_buffer() -> PredictionLogBuffer:
    buffer = PredictionLogBuffer(
        flush_seconds=settings.MODELWORKS_LOG_FLUSH_MS / 1000,
        max_rows=settings.MODELWORKS_LOG_BUFFER_MAX,
        max_bytes=settings.MODELWORKS_LOG_BUFFER_MAX_BYTES,
    )
    atexit.register(buffer.close)
    return buffer


# This process's buffer: `prediction_log()`.
prediction_log = PerProcess(_new_buffer)
