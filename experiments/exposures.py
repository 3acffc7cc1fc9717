"""First exposures: which arm a routing key got the first time an experiment served it, logged off the request path.

The router calls `record` after routing each request of a running experiment. It only touches memory: a key this
process has already seen for the experiment is skipped, a new one goes into a buffer that a background thread
inserts every MODELWORKS_EXPOSURE_FLUSH_MS with ON CONFLICT (experiment, key) DO NOTHING, so the first exposure
across all processes wins and a retried flush never duplicates (the same pattern as serving/prediction_log.py).
A flush failing on the database keeps its rows for the next try; a batch refused for its content (a key holding NUL
or a lone surrogate) is split until the guilty rows stand alone, and they go to the dead letters while the others are
written (serving/background.py). A clean exit flushes what is left. A crash loses at most the
exposures of the last interval, and those keys are recorded again on their next request.
"""

from __future__ import annotations

import atexit
import logging
from collections import OrderedDict
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from prometheus_client import Counter

from experiments.models import Experiment, Exposure
from registry.subjects import stored_key
from serving.background import BackgroundFlusher, store_dead_letters, write_isolating
from serving.per_process import PerProcess
from serving.traffic import Arm

logger = logging.getLogger(__name__)

KEY_LENGTH = 200  # as serving's prediction log stores routing keys
WRITTEN = Counter("modelworks_experiment_exposures_written_total", "First exposures sent to the database")
DROPPED = Counter("modelworks_experiment_exposures_dropped_total", "First exposures not buffered: buffer full")


class ExposureBuffer(BackgroundFlusher):
    source = "exposures"
    thread_name = "experiment-exposures"

    def __init__(self, *, flush_seconds: float, max_rows: int, seen_max: int = 200_000) -> None:
        super().__init__(flush_seconds=flush_seconds)
        self.max_rows = max_rows
        self.seen_max = seen_max
        self.dropped = 0
        self._pending: dict[tuple[int, str], tuple[str, datetime]] = {}
        # Keys already buffered or written by this process, oldest first: a bounded memory of who was seen.
        self._seen: OrderedDict[tuple[int, str], None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def record(self, experiment_id: int, arm: Arm, key: str | None) -> None:
        """Called on the request path: cheap, never raises. Keyless requests expose no key and are not recorded."""
        if key is None:
            return
        try:
            # Stored as MODELWORKS_HASH_ROUTING_KEYS says, like the prediction log, so the two still join.
            entry, name = (experiment_id, stored_key(key[:KEY_LENGTH])), arm.name
            with self._lock:
                if entry in self._seen:
                    return
                if len(self._pending) >= self.max_rows:
                    self.dropped += 1  # the database has been away for long; the key is recorded on a later request
                    DROPPED.inc()
                    return
                self._seen[entry] = None
                if len(self._seen) > self.seen_max:
                    self._seen.popitem(last=False)
                self._pending[entry] = (name, timezone.now())
            self._ensure_thread()
        except Exception:  # the request must be served whatever happens to its bookkeeping
            logger.exception("exposure not recorded")

    def flush(self) -> int:
        """Insert what is buffered: rows refused for their content become dead letters; when the database fails, the
        rows not written stay for the next try."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            outcome = write_isolating(list(batch.items()), lambda rows: insert(dict(rows)))
            store_dead_letters("exposures", [(_as_dict(row), error) for row, error in outcome.refused])
            if outcome.kept:
                logger.error("exposure flush failed; %d rows kept for the next try", len(outcome.kept),
                             exc_info=outcome.error)  # fmt: skip
                with self._lock:
                    self._pending = {**dict(outcome.kept), **self._pending}
            WRITTEN.inc(outcome.written)
            return outcome.written

    def unwritten(self) -> list[dict[str, object]]:
        with self._lock:
            batch, self._pending = self._pending, {}
        return [_as_dict(row) for row in batch.items()]

    def forget(self) -> None:
        """Drop the memory of seen keys (tests; an experiment that restarts with a fresh table)."""
        with self._lock:
            self._seen.clear()


def _as_dict(row: tuple[tuple[int, str], tuple[str, datetime]]) -> dict[str, object]:
    (experiment_id, key), (arm, seen) = row
    return {"experiment_id": experiment_id, "key": key, "arm": arm, "first_seen_at": seen}


def insert(batch: dict[tuple[int, str], tuple[str, datetime]]) -> None:
    rows = [
        Exposure(experiment_id=experiment_id, key=key, arm=arm, first_seen_at=seen)
        for (experiment_id, key), (arm, seen) in batch.items()
    ]
    # ignore_conflicts is INSERT ... ON CONFLICT DO NOTHING on Postgres (INSERT OR IGNORE on SQLite): the unique
    # (experiment, key) keeps the earliest exposure that reached the database. An experiment deleted meanwhile
    # would fail the whole batch on its foreign key, so rows of vanished experiments are dropped first.
    live = set(Experiment.objects.filter(pk__in={r.experiment_id for r in rows}).values_list("pk", flat=True))
    with transaction.atomic():
        kept = [r for r in rows if r.experiment_id in live]
        Exposure.objects.bulk_create(kept, ignore_conflicts=True, batch_size=2000)


def _new_buffer() -> ExposureBuffer:
    buffer = ExposureBuffer(
        flush_seconds=settings.MODELWORKS_EXPOSURE_FLUSH_MS / 1000, max_rows=settings.MODELWORKS_EXPOSURE_BUFFER_MAX
    )
    atexit.register(buffer.close)
    return buffer


# This process's buffer: `exposure_buffer()`.
exposure_buffer = PerProcess(_new_buffer)


def record(experiment_id: int, arm: Arm, key: str | None) -> None:
    exposure_buffer().record(experiment_id, arm, key)
