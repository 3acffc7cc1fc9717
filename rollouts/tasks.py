"""Celery entry points for rollouts: thin wrappers around one service each."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.db import OperationalError

from rollouts import services

logger = logging.getLogger(__name__)


@shared_task(
    name="rollouts.rollout_tick", acks_late=True, reject_on_worker_lost=True,
    soft_time_limit=120, time_limit=150, expires=30,  # each step is its own transaction: a cut tick loses none
)  # fmt: skip
def rollout_tick() -> list[dict[str, Any]]:
    """Move each due rollout on by one step (beat runs this every MODELWORKS_ROLLOUT_TICK_MS)."""
    try:
        return services.tick()
    except OperationalError as exc:
        # The embedded default (SQLite) has one writer at a time; past the busy timeout a tick gives way. Each step
        # is its own transaction, so nothing is half done: the next tick, seconds later, carries on.
        if "database is locked" not in str(exc):
            raise
        logger.warning("rollout tick skipped: the SQLite database stayed locked; the next tick retries")
        return []
