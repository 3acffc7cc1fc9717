"""Shadow traffic: a copy of a share of requests scored by a candidate off the request path, logged, never returned.

The caller's answer is already computed when a copy is queued; a single background thread per process scores the
copies in arrival order. The queue is bounded: when the candidate cannot keep up, copies are dropped (and counted)
rather than slowing production down. Each shadow answer is logged with the primary request's id plus "~shadow",
so agreement and latency can be compared row by row (rollouts/selectors.py), whichever protocol (native or
V2) the primary came by. A copy is routed as the server routes: the shadow version only while it is routable, and a
version that cannot take the copy (out of traffic, failing to load or to answer) is logged and counted as a failed
copy, never retried elsewhere (nobody waits for its answer).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from typing import Any

from django.db import close_old_connections, connection
from django.utils import timezone

from serving import metrics
from serving.models import Outcome, RouteReason
from serving.per_process import PerProcess

logger = logging.getLogger(__name__)

SUFFIX = "~shadow"
REFUSED = Outcome.SHADOW_REFUSED  # a copy the shadow version refused as input it cannot take (a 400)
QUEUE_LIMIT = 1000


def shadow_request_id(primary: str) -> str:
    return primary[: 64 - len(SUFFIX)] + SUFFIX


class ShadowRunner:
    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue(maxsize=QUEUE_LIMIT)
        threading.Thread(target=self._run, name="shadow-traffic", daemon=True).start()

    def submit(self, job: tuple) -> None:
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            metrics.SHADOW.labels(job[1].model_name, "dropped").inc()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued copy is scored (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._jobs.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                _score(*job)
            except Exception:  # a broken shadow must never take the thread down
                logger.exception("shadow scoring failed")
            finally:
                if self._jobs.empty():
                    connection.close()  # idle: hold no database connection while nothing is mirrored
                else:
                    close_old_connections()
                self._jobs.task_done()


shadow_runner = PerProcess(ShadowRunner)


def maybe_mirror(route: Any, rows: list[list[Any]], primary: Any) -> None:
    """Queue a copy of this request for the split's shadow version, for its share of requests."""
    split = route.split
    if route.version.pk == split.shadow_version_id or random.random() * 100 >= split.shadow_share:
        return
    shadow_runner().submit((split, primary, rows, route.reason))


def _score(split: Any, primary: Any, rows: list[list[Any]], primary_reason: str) -> None:
    from serving import routing
    from serving.model_cache import ModelLoadFailed, model_cache
    from serving.prediction_log import LogEntry, masked_inputs, prediction_log
    from serving.validation import InputError, rows_from_payload

    version = routing.version_by_id(split.shadow_version_id)
    started = time.perf_counter()
    checked: list[list[Any]] = []
    outputs: dict[str, Any]
    if not version.routable:  # rejected, tampered, archived or rolled back since the split was read
        outputs, outcome = {"error": f"{version} is {version.status} and out of traffic"}, Outcome.SHADOW_FAILED
    else:
        try:
            loaded = model_cache().get(version)
            # Checked as the shadow version would be if it were routed: the primary's check was its own dtype's.
            checked = rows_from_payload({"inputs": rows}, loaded.signature, len(rows), float_limit=loaded.float_limit)
            predictions, probabilities = loaded.predict(checked)
            outputs, outcome = {"predictions": predictions, "probabilities": probabilities}, Outcome.SHADOW
        except ModelLoadFailed as exc:
            checked, outputs, outcome = [], {"error": exc.message[:500]}, Outcome.SHADOW_FAILED
        except InputError as exc:  # the caller's values, refused: not the candidate's failure (not in shadow_errors)
            reasons = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in exc.errors)
            checked, outputs, outcome = [], {"error": reasons[:500]}, Outcome.SHADOW_REFUSED
        except Exception as exc:
            checked, outputs, outcome = [], {"error": type(exc).__name__}, Outcome.SHADOW_FAILED
    prediction_log().append(
        LogEntry(
            request_id=shadow_request_id(primary.request_id),
            model_name=primary.model,
            version=version.version,
            routing_key="",
            inputs=masked_inputs(checked, version.signature),
            outputs=outputs,
            latency_ms=(time.perf_counter() - started) * 1000,
            cached=False,
            route_reason=RouteReason.shadow(split.owner)[:100],
            outcome=outcome,
            created_at=timezone.now(),
        )
    )
    metrics.SHADOW.labels(primary.model, outcome).inc()
