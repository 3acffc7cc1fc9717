"""Queueing a Celery task from a web process: bounded, and a failure the caller can answer.

In a web process the broker's connect, each command and the publish retries are bounded (config/settings.py, Celery
lines), so a hung or down broker costs the request about a second and then `TaskNotQueued`; the API answers it 503
with Retry-After (config/api.py) rather than hanging or failing with a 500. Nothing is queued then: the caller says
what that means for its own write (monitoring/services/alerts.py records it on the alert).
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend
from kombu.exceptions import OperationalError
from prometheus_client import Counter

RETRY_AFTER_SECONDS = 5

NOT_QUEUED = Counter(
    "modelworks_tasks_not_queued_total", "Celery tasks a process could not queue: the broker timed out or refused",
    ["task"],
)  # fmt: skip


class TaskNotQueued(Exception):
    """The broker could not take the task (hung, down, or refusing); nothing was queued."""

    retry_after = RETRY_AFTER_SECONDS

    def __init__(self, task: str, cause: BaseException) -> None:
        super().__init__(f"the task queue is unavailable ({cause.__class__.__name__}: {cause}); {task} not queued")
        self.task = task


def enqueue(task: Any, *args: Any, **kwargs: Any) -> Any:
    """`task.delay(*args, **kwargs)`, raising TaskNotQueued (counted) when the broker cannot take it."""
    try:
        return task.delay(*args, **kwargs)
    except OperationalError as exc:  # Celery reraises the transport's connection errors and timeouts as this
        NOT_QUEUED.labels(task.name).inc()
        raise TaskNotQueued(task.name, exc) from exc


class WebRedisBackend(RedisBackend):
    """The Redis result backend of web processes (config/settings.py), which never wait for the tasks they queue
    (the API answers a task's id). Celery's backend subscribes to a task's result channel as it queues it: a Redis
    round trip per task and, with Redis hung, a RuntimeError ("the Celery application must be restarted") rather
    than a bounded failure. Workers store results as before; `AsyncResult.get()` still subscribes when it waits."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        pass


def enqueue_on(task: Any, queue: str, *args: Any, **options: Any) -> Any:
    """`enqueue` on a named queue, with Celery's other options (`expires`, `countdown`)."""
    try:
        return task.apply_async(args, queue=queue, **options)
    except OperationalError as exc:
        NOT_QUEUED.labels(task.name).inc()
        raise TaskNotQueued(task.name, exc) from exc
