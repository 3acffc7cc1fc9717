"""A route refresh reads production and the split in one snapshot: a promotion that commits between its two reads
must not send a key that was on the candidate back to the baseline (seen once in the Celery rollout test)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from rollouts import services as rollouts
from rollouts.models import Rollout, RolloutStatus
from serving import routing, traffic

pytestmark = pytest.mark.django_db(transaction=True)


def promote_elsewhere(rollout: Rollout) -> None:
    """Promote from another connection and wait for its commit: what a worker's tick does meanwhile."""

    failures: list[BaseException] = []

    def promote() -> None:
        try:
            promoted = rollouts.rollout_promote(rollout=Rollout.objects.get(pk=rollout.pk))
            assert Rollout.objects.get(pk=promoted.pk).status == RolloutStatus.PROMOTED  # committed
        except BaseException as exc:  # noqa: BLE001 (shown by the assertion below)
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=promote)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive() and not failures, failures


def test_a_promotion_committed_during_a_route_refresh_is_seen_whole(monkeypatch, canary_model, baseline, candidate):
    rollout = rollouts.rollout_start(model=canary_model, candidate=candidate, stage_seconds=60)
    rollouts.tick()  # started: 10% of keys on the candidate
    on_candidate = next(
        key for key in (f"user-{i}" for i in range(1000)) if routing.resolve("cancer", key=key).arm.name == "candidate"
    )
    promoted: list[bool] = []

    def promote_between_reads(model_id: int) -> None:
        # Called after the refresh read production and before the rollout's split is read.
        if not promoted:
            promoted.append(True)
            promote_elsewhere(rollout)

    monkeypatch.setattr(traffic, "_sources", [promote_between_reads, *traffic._sources])
    routing.clear_cache()
    route = routing.resolve("cancer", key=on_candidate)

    assert promoted, "the refresh never read the split"
    assert Rollout.objects.get(pk=rollout.pk).status == RolloutStatus.PROMOTED
    # Either the state before the promotion (the split, this key on the candidate) or after it (the candidate as
    # production): never the old production with no split.
    assert route.version.pk == candidate.pk, f"{on_candidate} went back to v{route.version.version} ({route.reason})"
