"""Rollouts through the services and the tick, on the real database, with real predictions in the log."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from registry import services as registry
from registry import traffic as registry_traffic
from registry.models import ModelVersion, RegistryEvent, VersionStatus
from registry.traffic import TrafficConflict, TrafficOwner
from rollouts import services as rollouts
from rollouts.models import Rollout, RolloutEvent, RolloutStatus
from serving import routing
from serving.prediction_log import prediction_log
from tests.rollouts.conftest import SAME_MODEL_LATENCY, Traffic, sample_rows, shifted

pytestmark = pytest.mark.django_db


def let_the_stage_run_out(rollout: Rollout) -> None:
    """Move the stage's start back by its (extended) duration: the clock running out, without the waiting."""
    rollout.refresh_from_db()
    elapsed = rollouts.stage_due_at(rollout) - rollout.stage_started_at + timedelta(milliseconds=1)
    Rollout.objects.filter(pk=rollout.pk).update(stage_started_at=rollout.stage_started_at - elapsed)


def run_stage(rollout: Rollout, rows, count: int = 150, **send) -> str:
    """Send traffic, write the log, and tick once the stage is due: what beat does."""
    Traffic().send(rows, count=count, **send)
    prediction_log().flush()
    routing.clear_cache()
    let_the_stage_run_out(rollout)
    return rollouts.tick()[0]["step"]


def actions(rollout: Rollout) -> list[str]:
    return list(RolloutEvent.objects.filter(rollout=rollout).values_list("action", flat=True))


def test_a_healthy_candidate_walks_every_stage_and_is_promoted(canary_model, baseline, candidate, logreg):
    rollout = rollouts.rollout_start(
        model=canary_model, candidate=candidate, stage_seconds=60, analysis={"min_requests": 30, **SAME_MODEL_LATENCY}
    )
    assert rollout.status == RolloutStatus.PENDING
    assert ModelVersion.objects.get(pk=candidate.pk).status == VersionStatus.CANARY
    assert rollouts.tick() == [{"rollout": rollout.pk, "step": "started"}]
    assert rollouts.tick() == []  # not due yet: nothing happens, however often beat ticks
    rows = sample_rows(logreg)
    steps = [run_stage(rollout, rows, count=600) for _ in range(4)]

    assert steps == ["next_stage", "next_stage", "next_stage", "promoted"], list(
        RolloutEvent.objects.filter(rollout=rollout).values_list("figures", flat=True)
    )
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.PROMOTED and rollout.finished_at is not None
    assert canary_model.aliases.get(name="production").version_id == candidate.pk
    assert ModelVersion.objects.get(pk=candidate.pk).status == VersionStatus.PRODUCTION
    assert ModelVersion.objects.get(pk=baseline.pk).status == VersionStatus.ARCHIVED
    started = RolloutEvent.objects.filter(rollout=rollout, action="stage.started")
    assert [e.figures["candidate_percent"] for e in started] == [10, 25, 50, 100]
    passed = RolloutEvent.objects.filter(rollout=rollout, action="stage.passed")
    assert [e.stage_index for e in passed] == [0, 1, 2, 3]
    assert all(e.figures["verdict"] == "healthy" and e.figures["candidate"]["requests"] >= 30 for e in passed)
    # After promotion the router sends everything to the new production version, with no split.
    routing.clear_cache()
    assert routing.resolve("cancer", key="anyone").reason == "alias:production"
    assert routing.resolve("cancer").version.pk == candidate.pk


def test_a_candidate_that_errors_is_rolled_back_at_the_first_analysis(canary_model, logreg, forest):
    """v1 (a forest, which takes missing values) is production; v2 (a logistic regression, which cannot) declares
    every feature nullable, so traffic with a missing value makes every one of its calls fail."""
    signature = {"inputs": [{"name": c, "dtype": "float", "nullable": True} for c in logreg.X_test.columns]}
    v1 = registry.model_version_register(
        model=canary_model, artifact=forest.artifact, signature=signature, evaluation_data=forest.eval_csv
    )
    registry.alias_create(model=canary_model, name="production", version=v1)
    v2 = registry.model_version_register(
        model=canary_model, artifact=logreg.artifact, signature=signature, evaluation_data=logreg.eval_csv
    )
    rollout = rollouts.rollout_start(model=canary_model, candidate=v2, stages=[50, 100], stage_seconds=60)
    rollouts.tick()
    rows = [row | {"mean radius": None} for row in sample_rows(logreg)]

    assert run_stage(rollout, rows, count=300) == "rolled_back"
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ROLLED_BACK
    assert rollout.reason.startswith("error rate 100.0% above the 5.0% limit")
    assert ModelVersion.objects.get(pk=v2.pk).status == VersionStatus.ROLLED_BACK
    decision = RolloutEvent.objects.get(rollout=rollout, action="rolled_back")
    assert decision.figures["candidate"]["errors"] == decision.figures["candidate"]["requests"] >= 100
    assert decision.figures["baseline"]["error_rate"] == 0
    assert canary_model.aliases.get(name="production").version_id == v1.pk
    # The candidate gets nothing any more.
    routing.clear_cache()
    seen = Traffic()
    seen.send(rows, count=200)
    assert {version for *_, version in seen.seen} == {1}
    assert not any("candidate" in reason for _, _, reason, _ in seen.seen)


def test_a_candidate_with_shifted_outputs_is_caught_by_the_output_drift_check(canary_model, baseline, logreg):
    drifting = registry.model_version_register(
        model=canary_model, artifact=shifted(logreg, 4.0), evaluation_data=logreg.eval_csv
    )
    assert drifting.status == VersionStatus.VALIDATED  # its accuracy passes the gate
    rollout = rollouts.rollout_start(model=canary_model, candidate=drifting, stages=[50, 100], stage_seconds=60)
    rollouts.tick()

    assert run_stage(rollout, sample_rows(logreg), count=600) == "rolled_back"
    rollout.refresh_from_db()
    assert "output drift" in rollout.reason
    figures = RolloutEvent.objects.get(rollout=rollout, action="rolled_back").figures
    assert figures["candidate"]["error_rate"] == 0  # it answered every request: only its answers changed


def test_too_little_traffic_extends_the_stage_then_pauses_as_inconclusive(canary_model, baseline, candidate, logreg):
    rollout = rollouts.rollout_start(
        model=canary_model, candidate=candidate, stage_seconds=60, analysis={"max_extensions": 2}
    )
    rollouts.tick()
    steps = [run_stage(rollout, sample_rows(logreg), count=5) for _ in range(3)]

    assert steps == ["extended", "extended", "paused"]
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.PAUSED and rollout.stage_index == 0
    assert rollout.reason.startswith("inconclusive: not enough traffic")
    assert canary_model.aliases.get(name="production").version_id == baseline.pk  # never promoted on no evidence
    assert rollouts.tick(now=timezone.now() + timedelta(days=1)) == []  # paused: the tick leaves it alone


def test_only_a_validated_version_can_start_a_rollout_and_only_one_at_a_time(canary_model, baseline, logreg):
    with pytest.raises(ValidationError, match="already in production|only a validated"):
        rollouts.rollout_start(model=canary_model, candidate=baseline)
    rejected = registry.model_version_register(model=canary_model, artifact=shifted(logreg, 20.0),
                                               evaluation_data=logreg.eval_csv)  # fmt: skip
    assert rejected.status == VersionStatus.REJECTED
    with pytest.raises(ValidationError, match="only a validated version"):
        rollouts.rollout_start(model=canary_model, candidate=rejected)
    good = registry.model_version_register(model=canary_model, artifact=logreg.artifact,
                                           evaluation_data=logreg.eval_csv)  # fmt: skip
    for bad, field in [({"stages": [50, 25, 100]}, "stages"), ({"stages": [10, 50]}, "stages"),
                       ({"analysis": {"p99_ratio": -1}}, "analysis"), ({"analysis": {"typo": 1}}, "analysis"),
                       ({"stage_seconds": 0}, "stage_seconds")]:  # fmt: skip
        with pytest.raises(ValidationError) as refused:
            rollouts.rollout_start(model=canary_model, candidate=good, **bad)
        assert field in refused.value.message_dict
    rollouts.rollout_start(model=canary_model, candidate=good)
    other = registry.model_version_register(model=canary_model, artifact=logreg.artifact,
                                            evaluation_data=logreg.eval_csv)  # fmt: skip
    with pytest.raises(ValidationError, match="already has rollout"):
        rollouts.rollout_start(model=canary_model, candidate=other)
    # The database refuses a second active rollout even if code skipped the check.
    with pytest.raises(IntegrityError), transaction.atomic():
        Rollout.objects.create(model=canary_model, candidate=other, baseline=baseline, salt="x", status="running")


def test_any_registered_owner_blocks_a_rollout(canary_model, baseline, candidate):
    """Experiments register the same kind of check: a model held by one cannot start the other."""

    def experiment_running(model_id: int) -> TrafficOwner | None:
        if model_id != canary_model.pk:
            return None
        return TrafficOwner("experiment", 99, "experiment 'pricing'", frozenset({baseline.pk}))

    registry_traffic.register_owner_check(experiment_running)
    try:
        with pytest.raises(TrafficConflict, match="already has experiment 'pricing' running"):
            rollouts.rollout_start(model=canary_model, candidate=candidate)
    finally:
        registry_traffic._owner_checks.remove(experiment_running)
    assert rollouts.active_rollout_owner(canary_model.pk) is None


def test_pause_resume_promote_and_abort_by_hand(canary_model, baseline, candidate, logreg, staff):
    rollout = rollouts.rollout_start(model=canary_model, candidate=candidate)
    rollouts.tick()
    paused = rollouts.rollout_pause(rollout=rollout, actor=staff)
    assert paused.status == RolloutStatus.PAUSED and paused.candidate_percent == 10  # the split holds while paused
    with pytest.raises(ValidationError, match="cannot pause a rollout that is paused"):
        rollouts.rollout_pause(rollout=rollout)
    resumed = rollouts.rollout_resume(rollout=rollout, actor=staff)
    assert resumed.status == RolloutStatus.RUNNING and resumed.stage_started_at > paused.stage_started_at
    rollouts.rollout_promote(rollout=rollout, actor=staff)
    assert canary_model.aliases.get(name="production").version_id == candidate.pk
    assert actions(rollout) == ["created", "stage.started", "paused", "resumed", "promoted"]
    assert RolloutEvent.objects.get(rollout=rollout, action="promoted").actor_name == "grace"
    with pytest.raises(ValidationError, match="cannot abort a rollout that is promoted"):
        rollouts.rollout_abort(rollout=rollout)

    third = registry.model_version_register(model=canary_model, artifact=logreg.artifact,
                                            evaluation_data=logreg.eval_csv)  # fmt: skip
    again = rollouts.rollout_start(model=canary_model, candidate=third)
    rollouts.tick()
    rollouts.rollout_abort(rollout=again, actor=staff)
    again.refresh_from_db()
    assert again.status == RolloutStatus.ABORTED
    assert ModelVersion.objects.get(pk=third.pk).status == VersionStatus.ROLLED_BACK
    routing.clear_cache()
    assert routing.resolve("cancer", key="k").version.pk == candidate.pk


def test_rollback_puts_the_previous_production_version_back(canary_model, baseline, candidate):
    registry.alias_move(model=canary_model, name="production", version=candidate)
    routing.resolve("cancer")  # cached in this process
    taken_out, serving_now = rollouts.model_rollback(model=canary_model)

    assert (taken_out.pk, serving_now.pk) == (candidate.pk, baseline.pk)
    assert canary_model.aliases.get(name="production").version_id == baseline.pk
    assert ModelVersion.objects.get(pk=candidate.pk).status == VersionStatus.ROLLED_BACK
    moves = RegistryEvent.objects.filter(model=canary_model, action="alias.moved").order_by("id")
    assert moves.last().after["version"] == baseline.version
    routing.clear_cache()  # what the route cache's 500 ms does in every process
    assert routing.resolve("cancer").version.pk == baseline.pk


def test_rollback_during_a_rollout_aborts_it(canary_model, baseline, candidate):
    rollout = rollouts.rollout_start(model=canary_model, candidate=candidate)
    rollouts.tick()
    taken_out, serving_now = rollouts.model_rollback(model=canary_model)
    assert (taken_out.pk, serving_now.pk) == (candidate.pk, baseline.pk)
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ABORTED


def test_rollback_without_an_earlier_version_says_so(canary_model, baseline):
    with pytest.raises(ValidationError, match="has no earlier production version"):
        rollouts.model_rollback(model=canary_model)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_ticks_never_advance_a_stage_twice(canary_model, baseline, candidate, logreg):
    rollout = rollouts.rollout_start(model=canary_model, candidate=candidate, stage_seconds=60, stages=[50, 100])
    rollouts.tick()
    Traffic().send(sample_rows(logreg), count=400)
    prediction_log().flush()
    let_the_stage_run_out(rollout)
    barrier = threading.Barrier(4)
    results: list = []

    def tick():
        barrier.wait()
        try:
            results.extend(rollouts.tick())
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [{"rollout": rollout.pk, "step": "next_stage"}]
    rollout.refresh_from_db()
    assert rollout.stage_index == 1
    assert actions(rollout) == ["created", "stage.started", "stage.passed", "stage.started"]


def running(stages: list[int], index: int, salt: str) -> Rollout:
    return Rollout(pk=7, salt=salt, stages=stages, stage_index=index, status=RolloutStatus.RUNNING,
                   stage_started_at=timezone.now(), candidate_id=2, baseline_id=1)  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(
    stages=st.lists(st.integers(1, 100), min_size=2, max_size=5, unique=True).map(sorted),
    salt=st.text(min_size=1, max_size=20),
    keys=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=50),
)
def test_sticky_keys_never_move_back_to_the_baseline_as_the_share_grows(stages, salt, keys):
    on_candidate: set[str] = set()
    for index in range(len(stages)):
        split = rollouts.split_of(running(stages, index, salt))
        now_candidate = {key for key in keys if split.arm_for(key).name == "candidate"}
        assert on_candidate <= now_candidate
        on_candidate = now_candidate


@pytest.mark.parametrize("percent", [10, 25, 50])
def test_keyed_and_keyless_shares_match_the_stage(percent):
    split = rollouts.split_of(running([percent, 100], 0, salt="s"))
    keyed = sum(split.arm_for(f"user-{i}").name == "candidate" for i in range(4000)) / 4000
    keyless = sum(split.arm_for(None).name == "candidate" for _ in range(4000)) / 4000
    assert abs(keyed * 100 - percent) <= 3 and abs(keyless * 100 - percent) <= 3


@pytest.mark.django_db(transaction=True)
def test_shadow_mirrors_traffic_without_changing_answers(canary_model, baseline, logreg):
    drifting = registry.model_version_register(
        model=canary_model, artifact=shifted(logreg, 4.0), evaluation_data=logreg.eval_csv
    )
    rollout = rollouts.rollout_start(model=canary_model, candidate=drifting, mode="shadow", shadow_percent=100)
    assert rollout.status == RolloutStatus.RUNNING
    seen = Traffic()
    seen.send(sample_rows(logreg), count=60)
    from serving.shadow import shadow_runner

    shadow_runner().drain()
    prediction_log().flush()
    assert {version for *_, version in seen.seen} == {baseline.version}  # answers always come from production
    from rollouts.selectors import shadow_comparison

    comparison = shadow_comparison(rollout)
    assert comparison["pairs"] == 60
    assert 0.5 < comparison["agreement"] < 1.0  # the shifted boundary changes some answers, not most
    assert comparison["candidate_p50_ms"] > 0 and comparison["baseline_p50_ms"] > 0
    assert rollouts.tick() == []  # a shadow has no stages: it runs until promoted or aborted


def test_the_decision_log_is_append_only_even_in_raw_sql(canary_model, baseline, candidate):
    rollout = rollouts.rollout_start(model=canary_model, candidate=candidate)
    event = RolloutEvent.objects.get(rollout=rollout)
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(Exception, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE serving_rolloutevent SET message = 'rewritten' WHERE id = %s", [event.pk])
    assert RolloutEvent.objects.get(pk=event.pk).message == ""


def test_ground_truth_that_says_the_candidate_is_worse_rolls_it_back(api, canary_model, baseline, candidate, logreg):
    """Same model, so errors, latency and outputs agree; only the feedback tells them apart."""
    rollout = rollouts.rollout_start(model=canary_model, candidate=candidate, stages=[50, 100], stage_seconds=60,
                                     analysis={"min_feedback": 50, **SAME_MODEL_LATENCY})  # fmt: skip
    rollouts.tick()
    from serving import services

    feedback = []
    for i, row in enumerate(sample_rows(logreg) * 3):
        answer = services.predict(model_name="cancer", payload={"instances": [row]}, routing_key=f"user-{i}")
        right = answer.predictions[0]
        feedback.append({"request_id": answer.request_id,
                         "actual": right if answer.route.endswith(":baseline") else 1 - right})  # fmt: skip
    prediction_log().flush()
    assert api.post("/api/v1/feedback", {"items": feedback}, format="json").status_code == 202
    let_the_stage_run_out(rollout)

    assert rollouts.tick()[0]["step"] == "rolled_back"
    rollout.refresh_from_db()
    assert rollout.reason.startswith("quality: accuracy 0.000 below the baseline's 1.000")
    quality = RolloutEvent.objects.get(rollout=rollout, action="rolled_back").figures["quality"]
    assert quality["candidate_n"] >= 50 and quality["baseline_n"] >= 50
