"""One lock order for every write that touches a model's traffic or versions, and one retry of a lost race.

The order: the registered model's row first, then whatever hangs off it (its experiment, rollout, aliases, versions).
Two transactions that take their locks in the same order queue behind each other instead of deadlocking. Should
Postgres still pick a transaction as a deadlock victim, or refuse it as a serialisation failure, the service runs
once more from the start; a second loss is a ConcurrentChangeError, which the API answers 409, never a 500.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import OperationalError, connection

from registry.models import RegisteredModel

logger = logging.getLogger(__name__)

# deadlock_detected, serialization_failure: the transaction was rolled back and may simply be run again.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
# lock_not_available: a lock_timeout ran out waiting behind another change; not retried (that would double the
# wait), but answered like a lost race.
CONFLICT_SQLSTATES = RETRYABLE_SQLSTATES | {"55P03"}
CONFLICT_MESSAGE = "another change to the same model was made at the same moment; nothing was stored, try again"

P = ParamSpec("P")
R = TypeVar("R")


class ConcurrentChangeError(Exception):
    """Another change to the same model won the race twice; nothing was stored and the caller may try again."""


def lock_model(model_id: int) -> RegisteredModel:
    """Lock the registered model's row inside the caller's transaction: the first lock of every such write."""
    return RegisteredModel.objects.select_for_update().get(pk=model_id)


def _sqlstate(exc: BaseException) -> str | None:
    cause = exc.__cause__ if isinstance(exc, OperationalError) else None
    # psycopg2 calls the SQLSTATE pgcode, psycopg 3 sqlstate.
    return getattr(cause, "pgcode", None) or getattr(cause, "sqlstate", None)


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or serialisation failure, as Django wraps psycopg's error."""
    return _sqlstate(exc) in RETRYABLE_SQLSTATES


def is_conflict(exc: BaseException) -> bool:
    """A change that lost to a concurrent one (is_retryable) or gave up waiting for its lock (lock_timeout)."""
    return _sqlstate(exc) in CONFLICT_SQLSTATES


def retry_on_conflict(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func` (a transactional service) once more when its transaction lost a deadlock or serialisation race.

    Only the outermost transaction can be retried: inside a caller's atomic block the error goes up unchanged, for
    the caller (or the API's exception handler) to deal with."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if connection.in_atomic_block:
            return func(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        except OperationalError as exc:
            if not is_retryable(exc):
                raise
            logger.warning("%s lost a race (%s); running it once more", func.__qualname__, exc)
        try:
            return func(*args, **kwargs)
        except OperationalError as exc:
            if not is_retryable(exc):
                raise
            raise ConcurrentChangeError(CONFLICT_MESSAGE) from exc

    return wrapper
