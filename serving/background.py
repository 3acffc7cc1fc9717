"""A buffer written to the database by its own background thread: the prediction log and experiment exposures.

Subclasses keep their rows however suits them and implement `flush()` (write what is buffered, keep what failed,
answer how many rows were written); `write_isolating` splits a batch the database refuses for its data, so the
guilty rows alone go to the dead letters (`store_dead_letters`) and the others are written. This class owns the
thread: started on first use, woken every `flush_seconds` (or at once by `wake()`), holding its own database
connection, and stopped by `close()`, which has it write what is left within a timeout (a clean shutdown loses
nothing; what the database cannot take in time goes to the dead-letter file).
"""

from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from django.db import close_old_connections, connection

logger = logging.getLogger(__name__)
T = TypeVar("T")


class BackgroundFlusher(ABC):
    thread_name = "background-flush"
    source = "rows"  # the dead letters' source name

    def __init__(self, *, flush_seconds: float) -> None:
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()  # guards the subclass's rows and the thread handle
        self._flush_lock = threading.Lock()  # one flush at a time, from the thread or from close()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False

    @abstractmethod
    def flush(self) -> int:
        """Write what is buffered; keep what failed for the next try; answer how many rows were written."""

    def wake(self) -> None:
        self._wake.set()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            last = self._stopping  # read before the flush: close() sets it, then wakes this thread for one more round
            # This thread owns its own database connection: drop it when it broke or aged out, as requests do.
            close_old_connections()
            if not self.flush():
                connection.close_if_unusable_or_obsolete()
            if last:
                break
        connection.close()

    def unwritten(self) -> list[dict[str, Any]]:
        """Take every row still buffered, as plain dicts (for the shutdown spill); subclasses say how."""
        return []

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left (clean shutdown), waiting at most `timeout` seconds for it.

        The thread writes it, in a last round, and the caller only joins it: a hung database (a stopped server
        answers neither the write nor the health check before it) cannot hold a shutting-down process past the
        timeout. What is still buffered then goes to the dead-letter file, so a clean stop loses nothing but a batch
        caught in a write to a hung database."""
        self._stopping = True
        self._wake.set()
        if self._thread is None:
            self.flush()  # no thread ever started (a buffer flushed by hand): nothing else writes it
        elif self._thread is not threading.current_thread():
            self._thread.join(timeout)
        left = self.unwritten()
        if left:
            spill_unwritten(self.source, left)


# --- Writing a batch that may hold rows the database can never take ----------------------------------------------
# A row whose own content cannot be written (an integer orjson cannot encode, a lone surrogate, a NUL in text or
# jsonb, a value out of a column's range) fails every retry; one such row must not hold back the rows around it.


def is_data_error(exc: BaseException) -> bool:
    """True when a write failed because of what the rows hold (retrying cannot help), not because the database is
    away or misconfigured (OperationalError, InterfaceError, ProgrammingError and anything unknown are kept)."""
    import psycopg2
    from django.db import DataError, IntegrityError

    return isinstance(
        exc, (TypeError, ValueError, DataError, IntegrityError, psycopg2.DataError, psycopg2.IntegrityError)
    )


@dataclass
class Written(Generic[T]):
    """What `write_isolating` did: how many rows it wrote, the rows refused for their content (with the error),
    and the rows left unwritten because the database failed (to keep for the next try)."""

    written: int = 0
    refused: list[tuple[T, str]] = field(default_factory=list)
    kept: list[T] = field(default_factory=list)
    error: BaseException | None = None


def write_isolating(rows: list[T], write: Callable[[list[T]], None]) -> Written[T]:
    """Write `rows` with `write` (all or nothing per call); a call failing on its data is split in halves until the
    guilty rows stand alone, so every other row is written. About 2·log2(n) extra calls per bad row."""
    outcome: Written[T] = Written()
    chunks: deque[list[T]] = deque([rows] if rows else [])
    while chunks:
        chunk = chunks.popleft()
        try:
            write(chunk)
        except Exception as exc:
            if not is_data_error(exc):
                outcome.kept = [row for part in (chunk, *chunks) for row in part]
                outcome.error = exc
                return outcome
            if len(chunk) == 1:
                outcome.refused.append((chunk[0], describe_error(exc)))
            else:
                middle = len(chunk) // 2
                chunks.extendleft((chunk[middle:], chunk[:middle]))
            continue
        outcome.written += len(chunk)
    return outcome


def describe_error(exc: BaseException) -> str:
    return safe_text(f"{type(exc).__name__}: {exc}")[:2000]


def safe_text(text: str) -> str:
    """Text any Postgres text column and any UTF-8 file can hold: lone surrogates and NUL written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def dead_letter_payload(row: dict[str, Any]) -> str:
    """A row as escaped JSON (ASCII only: NUL and surrogates become \\u escapes; huge integers stay exact)."""
    return json.dumps(row, ensure_ascii=True, default=str, sort_keys=True)[:DEAD_LETTER_MAX_CHARS]


DEAD_LETTER_MAX_CHARS = 1_000_000


def store_dead_letters(source: str, refused: list[tuple[dict[str, Any], str]]) -> None:
    """Keep refused rows for inspection: in serving_deadletter, or as JSON lines under MODELWORKS_DEAD_LETTER_DIR
    when the database cannot take them either. Counted in modelworks_log_dead_letters_total{source}."""
    if not refused:
        return
    from django.conf import settings
    from django.db import transaction
    from django.utils import timezone

    from serving import metrics
    from serving.models import DeadLetter

    now = timezone.now()
    letters = [DeadLetter(source=source, payload=dead_letter_payload(row), error=error, created_at=now)
               for row, error in refused]  # fmt: skip
    metrics.LOG_DEAD_LETTERS.labels(source).inc(len(letters))
    logger.error("%d %s rows refused by the database, kept as dead letters: %s", len(letters), source, refused[0][1])
    try:
        with transaction.atomic():
            DeadLetter.objects.bulk_create(letters)
        return
    except Exception:
        logger.exception("dead letters not stored in the database; writing them to a file")
    lines = [json.dumps({"source": source, "payload": letter.payload, "error": letter.error,
                         "created_at": now.isoformat()}, ensure_ascii=True) + "\n"
             for letter in letters]  # fmt: skip
    _append_capped(Path(settings.MODELWORKS_DEAD_LETTER_DIR) / f"{source}.jsonl", source, lines)


def spill_unwritten(source: str, rows: list[dict[str, Any]]) -> None:
    """Rows a shutting-down process could not write because the database did not answer: to the dead-letter file,
    counted as dead letters (so the alert says so), to be replayed by hand."""
    from django.conf import settings
    from django.utils import timezone

    from serving import metrics

    now = timezone.now().isoformat()
    error = "not written before shutdown: the database did not answer"
    lines = [json.dumps({"source": source, "payload": dead_letter_payload(row), "error": error, "created_at": now},
                        ensure_ascii=True) + "\n" for row in rows]  # fmt: skip
    metrics.LOG_DEAD_LETTERS.labels(source).inc(len(lines))
    logger.error("%d %s rows not written before shutdown; kept in the dead-letter file", len(lines), source)
    _append_capped(Path(settings.MODELWORKS_DEAD_LETTER_DIR) / f"{source}.jsonl", source, lines)


def _append_capped(path: Path, source: str, lines: list[str]) -> None:
    """Append while the file stays within MODELWORKS_DEAD_LETTER_FILE_MAX_MB; the lines that would take it past are
    dropped and counted (modelworks_log_dead_letters_dropped_total{source}): a long outage full of refused rows must
    not fill the disk the platform runs on. Processes sharing the file can each overshoot by one batch."""
    from django.conf import settings

    from serving import metrics

    cap = int(settings.MODELWORKS_DEAD_LETTER_FILE_MAX_MB * 1024 * 1024)
    written = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="ascii") as out:
            size = out.tell()
            for line in lines:
                if size + len(line) > cap:
                    break
                out.write(line)
                size += len(line)
                written += 1
    except OSError:
        logger.exception("dead letters lost: %d %s rows", len(lines) - written, source)
        metrics.LOG_DEAD_LETTERS_DROPPED.labels(source).inc(len(lines) - written)
        return
    if written < len(lines):
        logger.error("dead letters dropped: %d %s rows (%s is at its cap)", len(lines) - written, source, path)
        metrics.LOG_DEAD_LETTERS_DROPPED.labels(source).inc(len(lines) - written)
