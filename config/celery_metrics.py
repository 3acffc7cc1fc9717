"""Prometheus metrics for Celery workers: tasks finished by name and state, task duration, and queue depth.

A worker exports them on its own HTTP port when MODELWORKS_WORKER_METRICS_PORT is set (deployments set 9808), from
the worker's main process. Prefork children count into PROMETHEUS_MULTIPROC_DIR when it is set (the manifests set
it), and the main process merges them, as gunicorn's web workers do. The queue depth is read from the broker at
scrape time (one LLEN per queue on Redis), for the default queue and every queue this worker consumes.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from celery import signals
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

TASKS = Counter("modelworks_celery_tasks_total", "Celery tasks finished, by task and final state", ["task", "state"])
TASK_SECONDS = Histogram(
    "modelworks_celery_task_seconds", "Celery task run time", ["task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
)  # fmt: skip

_started: dict[str, float] = {}


@signals.task_prerun.connect
def _task_started(task_id: str, **_) -> None:
    _started[task_id] = time.perf_counter()


@signals.task_postrun.connect
def _task_finished(task_id: str, task, state: str | None = None, **_) -> None:
    TASKS.labels(task.name, state or "UNKNOWN").inc()
    started = _started.pop(task_id, None)
    if started is not None:
        TASK_SECONDS.labels(task.name).observe(time.perf_counter() - started)


class QueueDepth:
    """modelworks_celery_queue_length{queue}: messages waiting in the broker, read when Prometheus scrapes."""

    def __init__(self, broker_url: str, queues: list[str]) -> None:
        self.broker_url = broker_url
        self.queues = queues

    def collect(self):
        family = GaugeMetricFamily("modelworks_celery_queue_length", "Messages waiting in the broker", labels=["queue"])
        if self.broker_url.startswith(("redis://", "rediss://")):
            import redis

            try:
                client = redis.Redis.from_url(self.broker_url, socket_timeout=2, socket_connect_timeout=2)
                for queue in self.queues:
                    family.add_metric([queue], client.llen(queue))
            except redis.RedisError:
                logger.warning("queue depth: the broker did not answer")
        yield family


@signals.worker_ready.connect
def _serve_metrics(sender, **_) -> None:
    port = os.environ.get("MODELWORKS_WORKER_METRICS_PORT")
    if not port:
        return
    registry = REGISTRY
    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    app = sender.app
    queues = sorted({app.conf.task_default_queue, *(q.name for q in sender.task_consumer.queues)})
    registry.register(QueueDepth(app.conf.broker_url, queues))
    # Every interface by default: Prometheus scrapes the pod or container from outside it.
    address = os.environ.get("MODELWORKS_WORKER_METRICS_ADDR", "0.0.0.0")  # noqa: S104
    start_http_server(int(port), addr=address, registry=registry)
    logger.info("worker metrics on port %s (queues %s)", port, ", ".join(queues))


@signals.worker_init.connect
def _fresh_multiprocess_dir(**_) -> None:
    """Counts left by a previous run of this worker would be added to the new one's: start from an empty folder."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder and os.environ.get("MODELWORKS_WORKER_METRICS_PORT"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
