"""Celery entry points for rollouts: thin wrappers around one service each."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from rollouts import services


@shared_task(name="rollouts.rollout_tick", acks_late=True, reject_on_worker_lost=True)
def rollout_tick() -> list[dict[str, Any]]:
    """Move each due rollout on by one step (beat runs this every MODELWORKS_ROLLOUT_TICK_MS)."""
    return services.tick()
