"""Rollouts driven by a real Celery beat and worker, with live traffic from this process, in short stages."""

from __future__ import annotations

import math
import random
import threading
import time

import pytest
from django.db import connection

from registry import services as registry
from rollouts.models import Rollout, RolloutEvent, RolloutStatus
from rollouts.services import rollout_start
from tests.rollouts.conftest import SAME_MODEL_LATENCY, Traffic, sample_rows, shifted

pytestmark = pytest.mark.django_db(transaction=True)

STAGE_SECONDS = 3
SETTLE = 0.7  # the route cache (500 ms) plus a margin: requests this soon after a change may see the old split


def drive(rollout: Rollout, rows, *, until: set[str], timeout: float = 90, keys: list[str] | None = None) -> Traffic:
    """Send requests from 3 threads, as a web process serves them, until the rollout reaches one of `until`; keyed
    from `keys` when given, else keyless. Threads overlap their waits on Redis, so a busy machine still gets
    enough requests into each short stage."""
    done = threading.Event()
    streams = [Traffic() for _ in range(3)]

    def send(stream: Traffic) -> None:
        try:
            while not done.is_set():
                if keys is None:
                    stream.send(rows, keyed=False, count=20)
                else:
                    stream.send(rows, key=lambda: random.choice(keys), count=20)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(stream,)) for stream in streams]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            time.sleep(0.05)
            rollout.refresh_from_db()
            if rollout.status in until:
                break
        else:
            raise AssertionError(f"rollout still {rollout.status} at stage {rollout.stage_index} after {timeout} s")
    finally:
        done.set()
        for thread in threads:
            thread.join()
    return Traffic(sorted(seen for stream in streams for seen in stream.seen))


def stage_windows(rollout: Rollout) -> list[tuple[int, float, float]]:
    """(percent, from, to) per stage, from the stage.started events, trimmed by SETTLE at the start."""
    starts = list(RolloutEvent.objects.filter(rollout=rollout, action="stage.started").order_by("id"))
    ends = [e.created_at.timestamp() for e in starts[1:]] + [rollout.finished_at.timestamp()]
    return [
        (event.figures["candidate_percent"], event.created_at.timestamp() + SETTLE, end)
        for event, end in zip(starts, ends, strict=True)
    ]


def test_a_healthy_candidate_is_promoted_stage_by_stage_with_the_planned_split(
    celery, flushing_log, canary_model, baseline, candidate, logreg
):
    # Long enough stages for thousands of requests each from this one process (at least 500 on a busy machine).
    rollout = rollout_start(model=canary_model, candidate=candidate, stage_seconds=6,
                            analysis={"min_requests": 50, **SAME_MODEL_LATENCY})  # fmt: skip
    keys = [f"user-{i}" for i in range(100_000)]
    traffic = drive(rollout, sample_rows(logreg), until={RolloutStatus.PROMOTED, RolloutStatus.ROLLED_BACK}, keys=keys)

    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.PROMOTED, rollout.reason
    assert canary_model.aliases.get(name="production").version_id == candidate.pk
    for percent, start, end in stage_windows(rollout)[:-1]:  # the 100% stage: everything goes to the candidate
        during = [reason for at, _, reason, _ in traffic.seen if start <= at < end]
        share = 100 * sum(reason.endswith(":candidate") for reason in during) / len(during)
        assert len(during) >= 500, f"only {len(during)} requests in the {percent}% stage"
        # Four standard errors of a binomial share (at least 3 points): a busy machine sends fewer requests per
        # stage, which widens the bound honestly instead of failing the split for being measured on less traffic.
        bound = max(3.0, 4 * 100 * math.sqrt(percent / 100 * (1 - percent / 100) / len(during)))
        assert abs(share - percent) <= bound, f"{share:.1f}% to the candidate in the {percent}% stage (n={len(during)})"
    # Sticky: a key that reached the candidate never went back to the baseline while the share grew.
    # (By version: after promotion the candidate serves everyone as production, which is no move back.)
    on_candidate: set[str] = set()
    for _, key, reason, version in traffic.seen:
        if version == candidate.version:
            on_candidate.add(key)
        else:
            assert key not in on_candidate, f"{key} went back from the candidate to {reason}"
    stages = RolloutEvent.objects.filter(rollout=rollout, action="stage.passed").values_list("stage_index", flat=True)
    assert list(stages) == [0, 1, 2, 3]


def test_an_erroring_candidate_is_rolled_back_then_gets_no_traffic(celery, flushing_log, canary_model, logreg, forest):
    signature = {"inputs": [{"name": c, "dtype": "float", "nullable": True} for c in logreg.X_test.columns]}
    v1 = registry.model_version_register(
        model=canary_model, artifact=forest.artifact, signature=signature, evaluation_data=forest.eval_csv
    )
    registry.alias_create(model=canary_model, name="production", version=v1)
    v2 = registry.model_version_register(
        model=canary_model, artifact=logreg.artifact, signature=signature, evaluation_data=logreg.eval_csv
    )
    rollout = rollout_start(model=canary_model, candidate=v2, stage_seconds=STAGE_SECONDS)
    rows = [row | {"mean radius": None} for row in sample_rows(logreg)]
    drive(rollout, rows, until={RolloutStatus.ROLLED_BACK, RolloutStatus.PROMOTED})

    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ROLLED_BACK and rollout.stage_index == 0  # at the first analysis
    assert "error rate" in rollout.reason
    time.sleep(1.0)  # every process follows a change within a second
    after = Traffic()
    after.send(rows, keyed=True, count=500)
    assert not any("candidate" in reason for _, _, reason, _ in after.seen)
    assert {version for *_, version in after.seen} == {v1.version}


def test_shifted_outputs_are_caught_by_the_output_drift_check(celery, flushing_log, canary_model, baseline, logreg):
    drifting = registry.model_version_register(
        model=canary_model, artifact=shifted(logreg, 4.0), evaluation_data=logreg.eval_csv
    )
    # Same model, same speed: a latency spike on a busy machine must not be what rolls it back first.
    rollout = rollout_start(model=canary_model, candidate=drifting, stages=[50, 100], stage_seconds=STAGE_SECONDS,
                            analysis=SAME_MODEL_LATENCY)  # fmt: skip
    drive(rollout, sample_rows(logreg), until={RolloutStatus.ROLLED_BACK, RolloutStatus.PROMOTED})

    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ROLLED_BACK
    assert rollout.reason.startswith("output drift")


def test_worker_and_beat_killed_mid_stage_resume_without_skipping_or_repeating(
    celery, flushing_log, canary_model, baseline, candidate, logreg, fault_row
):
    """One case of the fault suite (tests/platform/test_fault_suite.py): its line in the fault table counts the
    rollout's stage events, expected and found, and the seconds from the restart to the next stage."""
    rollout = rollout_start(model=canary_model, candidate=candidate, stages=[20, 60, 100], stage_seconds=2,
                            analysis={"min_requests": 30, **SAME_MODEL_LATENCY})  # fmt: skip
    rows = sample_rows(logreg)
    traffic = Traffic()
    deadline = time.monotonic() + 60
    while rollout.stage_index < 1 and time.monotonic() < deadline:
        traffic.send(rows, keyed=False, count=50)
        rollout.refresh_from_db()
    assert rollout.stage_index == 1
    celery.kill_worker()  # mid-stage: no worker, no beat
    celery.kill_beat()
    pause_until = time.monotonic() + 3  # the stage falls due while neither runs
    while time.monotonic() < pause_until:
        traffic.send(rows, keyed=False, count=50)
    rollout.refresh_from_db()
    assert rollout.stage_index == 1  # nothing moved without them
    celery.start_worker()
    celery.start_beat()
    restarted = time.time()
    drive(rollout, rows, until={RolloutStatus.PROMOTED, RolloutStatus.ROLLED_BACK, RolloutStatus.PAUSED})

    rollout.refresh_from_db()
    events = RolloutEvent.objects.filter(rollout=rollout)
    started = list(events.filter(action="stage.started").values_list("stage_index", flat=True))
    passed = list(events.filter(action="stage.passed").values_list("stage_index", flat=True))
    next_stage = events.filter(action="stage.started", stage_index=2).first()
    recovery = next_stage.created_at.timestamp() - restarted if next_stage else float("nan")
    fault_row("Celery worker and beat SIGKILLed mid-rollout (stage events)", len(traffic.seen), 0,
              6, len(started) + len(passed), recovery)  # fmt: skip
    assert rollout.status == RolloutStatus.PROMOTED, rollout.reason
    assert started == [0, 1, 2] and passed == [0, 1, 2]
    assert events.filter(action="promoted").count() == 1
