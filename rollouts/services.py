"""Rollouts: a candidate version takes over production traffic in stages, judged after each stage, or is rolled back.

The state lives in the Rollout row; `tick()` (the beat task, every few seconds) moves each active rollout on when its
stage is due. Nothing sleeps through a stage, each rollout is advanced under its row lock (taken with SKIP LOCKED, so
concurrent ticks never advance one twice), and a stage ends by writing its successor's start time, so a tick that
comes again, or a worker that restarts, finds nothing due and repeats nothing.

The router reads the split from `split_for_model`, and registry/traffic.py asks `active_rollout_owner` who holds a
model's traffic: rollouts/apps.py registers both when the app starts.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from registry import permissions
from registry import services as registry
from registry.locking import lock_model
from registry.models import ModelVersion, RegisteredModel, Task, VersionStatus
from registry.selectors import previous_production
from registry.services import PRODUCTION_ALIAS
from registry.traffic import TrafficOwner, claim_model
from registry.webhooks import services as webhooks
from rollouts import analysis as rollout_analysis
from rollouts.models import ACTIVE_ROLLOUT_STATUSES, Rollout, RolloutEvent, RolloutStatus
from serving import traffic

# --- The router's view ---------------------------------------------------------------------------------------------


def split_for_model(model_id: int) -> traffic.Split | None:
    """The traffic split of the model's running or paused rollout (pending ones take no traffic yet)."""
    rollout = (
        Rollout.objects.filter(model_id=model_id, status__in=[RolloutStatus.RUNNING, RolloutStatus.PAUSED])
        .only(
            "id",
            "salt",
            "mode",
            "status",
            "stages",
            "stage_index",
            "stage_started_at",
            "shadow_percent",
            "candidate_id",
            "baseline_id",
        )  # fmt: skip
        .first()
    )
    return None if rollout is None else split_of(rollout)


def split_of(rollout: Rollout) -> traffic.Split:
    edge = round(rollout.candidate_percent * traffic.BUCKETS / 100)
    arms = [traffic.Arm("baseline", rollout.baseline_id, ((edge, traffic.BUCKETS),))]
    if edge > 0:
        # The candidate holds the low buckets: as its share grows it only gains keys, so nobody moves back.
        arms.append(traffic.Arm("candidate", rollout.candidate_id, ((0, edge),)))
    mirror = rollout.shadow_percent > 0
    return traffic.Split(
        owner=rollout.route_owner,
        salt=rollout.salt,
        arms=tuple(arms),
        shadow_version_id=rollout.candidate_id if mirror else None,
        shadow_share=rollout.shadow_percent,
    )


def active_rollout_owner(model_id: int) -> TrafficOwner | None:
    """registry.traffic's owner check: the model's active rollout (pending, running or paused), if any."""
    found = (
        Rollout.objects.filter(model_id=model_id, status__in=ACTIVE_ROLLOUT_STATUSES)
        .values_list("pk", "candidate_id", "baseline_id")
        .first()
    )
    if found is None:
        return None
    pk, candidate_id, baseline_id = found
    return TrafficOwner("rollout", pk, f"rollout {pk}", frozenset({candidate_id, baseline_id}))


# --- Starting ------------------------------------------------------------------------------------------------------


# The rollout decisions CI/CD hears as webhooks (registered as event types in rollouts/apps.py).
WEBHOOK_EVENTS = {
    "rollout.created": "a rollout started",
    "rollout.paused": "a rollout paused (by hand or by its analysis)",
    "rollout.promoted": "a rollout promoted its candidate to production",
    "rollout.rolled_back": "a rollout's analysis rolled its candidate back",
    "rollout.aborted": "a rollout was aborted (by hand, or by a rollback)",
}


def _event(rollout: Rollout, action: str, *, figures: dict | None = None, message: str = "", actor: Any = None):
    event = RolloutEvent.objects.create(
        rollout=rollout,
        action=action,
        stage_index=rollout.stage_index if rollout.mode == Rollout.Mode.CANARY else None,
        figures=figures or {},
        message=message,
        actor_name=getattr(actor, "username", "") or "system",
    )
    if f"rollout.{action}" in WEBHOOK_EVENTS:
        webhooks.webhook_event_fire(
            event_type=f"rollout.{action}", model=rollout.model,
            data={"rollout": rollout.pk, "candidate": rollout.candidate.version, "baseline": rollout.baseline.version,
                  "mode": rollout.mode, "status": rollout.status, "stage_index": event.stage_index, "figures": figures
                  or {}, "message": message, "actor": event.actor_name},
        )  # fmt: skip
    return event


def _checked_stages(stages: Any) -> list[int]:
    if not isinstance(stages, list) or not stages or not all(isinstance(p, int) and 0 < p <= 100 for p in stages):
        raise ValidationError({"stages": ["must be a list of whole percentages between 1 and 100"]})
    if any(b <= a for a, b in zip(stages, stages[1:], strict=False)):
        raise ValidationError({"stages": ["must grow from stage to stage"]})
    if stages[-1] != 100:
        raise ValidationError({"stages": ["the last stage must send 100% of traffic to the candidate"]})
    return stages


def _checked_analysis(analysis: Any) -> dict[str, float]:
    if analysis is None:
        return {}
    if not isinstance(analysis, dict):
        raise ValidationError({"analysis": ["must be an object of threshold overrides"]})
    unknown = sorted(set(analysis) - set(rollout_analysis.DEFAULTS))
    if unknown:
        raise ValidationError({"analysis": [f"unknown thresholds: {', '.join(unknown)}"]})
    bad = [k for k, v in analysis.items() if isinstance(v, bool) or not isinstance(v, int | float) or v < 0]
    if bad:
        raise ValidationError({"analysis": [f"must be non-negative numbers: {', '.join(sorted(bad))}"]})
    return analysis


@transaction.atomic
def rollout_start(
    *,
    model: RegisteredModel,
    candidate: ModelVersion,
    mode: str = Rollout.Mode.CANARY,
    stages: list[int] | None = None,
    stage_seconds: int = 300,
    shadow_percent: float = 0.0,
    analysis: dict[str, float] | None = None,
    actor: Any = None,
) -> Rollout:
    """Start moving production traffic of `model` to `candidate` (or, mode shadow, mirror a share to it)."""
    model = claim_model(model, starting=f"a rollout of v{candidate.version}")
    permissions.check(actor, permissions.DEPLOY, model)
    errors: dict[str, list[str]] = {}
    if candidate.model_id != model.pk:
        errors["version"] = [f"version {candidate.version} belongs to another model"]
    elif candidate.status != VersionStatus.VALIDATED:
        errors["version"] = [f"only a validated version can be rolled out; v{candidate.version} is {candidate.status}"]
    elif candidate.integrity_failed_at is not None:
        errors["version"] = [f"v{candidate.version} failed its integrity check"]
    baseline = model.aliases.filter(name=PRODUCTION_ALIAS).select_related("version").first()
    if baseline is None:
        errors["model"] = [f"{model.name} has no production version to roll out against; set the alias instead"]
    elif baseline.version_id == candidate.pk:
        errors["version"] = [f"v{candidate.version} is already in production"]
    if mode not in Rollout.Mode.values:
        errors["mode"] = [f"must be one of {', '.join(Rollout.Mode.values)}"]
    if not 1 <= int(stage_seconds) <= 7 * 24 * 3600:
        errors["stage_seconds"] = ["must be between 1 second and a week"]
    if not 0 <= shadow_percent <= 100 or (mode == Rollout.Mode.SHADOW and shadow_percent <= 0):
        errors["shadow_percent"] = ["must be between 0 and 100, and above 0 for a shadow rollout"]
    if errors:
        raise ValidationError(errors)
    stages = [100] if mode == Rollout.Mode.SHADOW else _checked_stages(stages or [10, 25, 50, 100])
    rollout = Rollout.objects.create(
        model=model,
        candidate=candidate,
        baseline=baseline.version,
        mode=mode,
        stages=stages,
        stage_seconds=int(stage_seconds),
        shadow_percent=float(shadow_percent),
        salt=uuid.uuid4().hex,
        analysis=_checked_analysis(analysis),
        created_by=actor if getattr(actor, "pk", None) else None,
    )
    if mode == Rollout.Mode.SHADOW:
        rollout.status = RolloutStatus.RUNNING
        rollout.stage_started_at = timezone.now()
        rollout.save(update_fields=["status", "stage_started_at", "updated_at"])
    else:
        registry.model_version_set_status(
            version=candidate, status=VersionStatus.CANARY, actor=actor, message=f"rollout {rollout.pk} started"
        )
    _event(rollout, "created", actor=actor, figures={"stages": stages, "stage_seconds": rollout.stage_seconds,
                                                     "baseline": baseline.version.version, "mode": mode})  # fmt: skip
    return rollout


# --- The tick ------------------------------------------------------------------------------------------------------


def tick(now: datetime | None = None) -> list[dict[str, Any]]:
    """Advance every due rollout by at most one step. Safe to run concurrently and as often as wanted."""
    done = []
    ids = Rollout.objects.filter(
        mode=Rollout.Mode.CANARY, status__in=[RolloutStatus.PENDING, RolloutStatus.RUNNING]
    ).values_list("pk", "model_id")
    for rollout_id, model_id in list(ids):
        with transaction.atomic():
            # The model row first, registry.locking's one lock order (a promotion or roll back takes it again): a
            # model that a hand control or another tick holds right now is left for the next tick, never waited for.
            if not list(RegisteredModel.objects.select_for_update(skip_locked=True).filter(pk=model_id).values("pk")):
                continue
            rollout = (
                Rollout.objects.select_for_update(skip_locked=True)
                .select_related("model", "candidate", "baseline")
                .filter(pk=rollout_id, status__in=[RolloutStatus.PENDING, RolloutStatus.RUNNING])
                .first()
            )
            if rollout is None:  # another tick holds it, or it finished meanwhile
                continue
            step = _advance(rollout, now or timezone.now())
            if step is not None:
                done.append({"rollout": rollout.pk, "step": step})
    return done


def stage_due_at(rollout: Rollout) -> datetime | None:
    if rollout.stage_started_at is None:
        return None
    return rollout.stage_started_at + timedelta(seconds=rollout.stage_seconds * (1 + rollout.stage_extensions))


def _advance(rollout: Rollout, now: datetime) -> str | None:
    if rollout.status == RolloutStatus.PENDING:
        _enter_stage(rollout, 0, now)
        return "started"
    due = stage_due_at(rollout)
    if due is None or now < due:
        return None
    classifier = rollout.model.task == Task.CLASSIFICATION
    verdict = rollout_analysis.analyse(rollout, rollout.stage_started_at, now, classifier=classifier)
    figures = {**verdict.figures, "verdict": verdict.outcome, "reasons": verdict.reasons}
    if verdict.outcome == "unhealthy":
        _roll_back(rollout, RolloutStatus.ROLLED_BACK, "; ".join(verdict.reasons), figures=figures, now=now)
        return "rolled_back"
    if verdict.outcome == "inconclusive":
        limit = int(rollout_analysis.thresholds(rollout)["max_extensions"])
        if rollout.stage_extensions >= limit:
            reason = f"inconclusive: not enough traffic after {limit} extensions ({verdict.reasons[0]})"
            rollout.status, rollout.reason = RolloutStatus.PAUSED, reason
            rollout.save(update_fields=["status", "reason", "updated_at"])
            _event(rollout, "paused", figures=figures, message=reason)
            return "paused"
        rollout.stage_extensions += 1
        rollout.save(update_fields=["stage_extensions", "updated_at"])
        _event(rollout, "stage.extended", figures=figures, message=verdict.reasons[0])
        return "extended"
    _event(rollout, "stage.passed", figures=figures, message=f"stage {rollout.stage_index + 1} healthy")
    if rollout.stage_index + 1 < len(rollout.stages):
        _enter_stage(rollout, rollout.stage_index + 1, now)
        return "next_stage"
    # Re-hashed now: a candidate whose file changed on disk after its last load (or that no request reached) is never
    # made production; the check marks it, and the rollout rolls back below.
    registry.model_version_verify_integrity(version=rollout.candidate)
    if not rollout.candidate.routable:  # e.g. its artifact failed the integrity check: never made production
        state = "tampered" if rollout.candidate.integrity_failed_at else rollout.candidate.status
        reason = f"v{rollout.candidate.version} is {state} and can no longer be served: not promoted"
        _roll_back(rollout, RolloutStatus.ROLLED_BACK, reason, figures=figures, now=now)
        return "rolled_back"
    _promote(rollout, now=now, message="every stage healthy")
    return "promoted"


def _enter_stage(rollout: Rollout, index: int, now: datetime) -> None:
    rollout.status = RolloutStatus.RUNNING
    rollout.stage_index = index
    rollout.stage_started_at = now
    rollout.stage_extensions = 0
    rollout.save(update_fields=["status", "stage_index", "stage_started_at", "stage_extensions", "updated_at"])
    percent = rollout.stages[index]
    message = f"stage {index + 1} of {len(rollout.stages)}: {percent}% to the candidate"
    _event(rollout, "stage.started", figures={"candidate_percent": percent}, message=message)


def _finish(rollout: Rollout, status: str, reason: str, now: datetime) -> None:
    rollout.status, rollout.reason, rollout.finished_at = status, reason, now
    rollout.save(update_fields=["status", "reason", "finished_at", "updated_at"])


def _promote(rollout: Rollout, *, now: datetime, message: str, actor: Any = None) -> None:
    # The rollout lets go of the traffic first, so the registry's owner check lets the production alias move (same
    # transaction: nobody sees one without the other). The move sets the statuses: candidate production, the old
    # version archived (still loadable).
    _finish(rollout, RolloutStatus.PROMOTED, message, now)
    registry.alias_move(model=rollout.model, name=PRODUCTION_ALIAS, version=rollout.candidate, actor=actor)
    _event(rollout, "promoted", message=message, actor=actor)


def _roll_back(rollout: Rollout, status: str, reason: str, *, figures=None, now: datetime, actor: Any = None) -> None:
    _finish(rollout, status, reason, now)
    if rollout.mode == Rollout.Mode.CANARY:
        registry.model_version_set_status(
            version=rollout.candidate, status=VersionStatus.ROLLED_BACK, actor=actor,
            message=f"rollout {rollout.pk}: {reason}",
        )  # fmt: skip
    _event(rollout, status, figures=figures, message=reason, actor=actor)


# --- Manual control ------------------------------------------------------------------------------------------------


def _locked(rollout: Rollout, allowed: tuple[str, ...], action: str, actor: Any) -> Rollout:
    lock_model(rollout.model_id)  # the model row first: registry.locking's one lock order (model_rollback holds it)
    locked = Rollout.objects.select_for_update().select_related("model", "candidate").get(pk=rollout.pk)
    permissions.check(actor, permissions.DEPLOY, locked.model)  # every control moves traffic (registry/permissions)
    if locked.status not in allowed:
        raise ValidationError({"status": [f"cannot {action} a rollout that is {locked.status}"]})
    return locked


@transaction.atomic
def rollout_pause(*, rollout: Rollout, actor: Any = None, reason: str = "paused by hand") -> Rollout:
    """Hold the current split; the stage clock stops until resumed."""
    locked = _locked(rollout, (RolloutStatus.PENDING, RolloutStatus.RUNNING), "pause", actor)
    locked.status, locked.reason = RolloutStatus.PAUSED, reason
    locked.save(update_fields=["status", "reason", "updated_at"])
    _event(locked, "paused", message=reason, actor=actor)
    return locked


@transaction.atomic
def rollout_resume(*, rollout: Rollout, actor: Any = None) -> Rollout:
    """Run the current stage again from now, with a fresh analysis window and fresh extensions."""
    locked = _locked(rollout, (RolloutStatus.PAUSED,), "resume", actor)
    now = timezone.now()
    locked.status, locked.reason = RolloutStatus.RUNNING, ""
    locked.stage_started_at, locked.stage_extensions = now, 0
    locked.save(update_fields=["status", "reason", "stage_started_at", "stage_extensions", "updated_at"])
    _event(locked, "resumed", actor=actor, message=f"stage {locked.stage_index + 1} restarted")
    return locked


@transaction.atomic
def rollout_promote(*, rollout: Rollout, actor: Any = None) -> Rollout:
    """Skip the remaining stages: the candidate becomes production now."""
    locked = _locked(rollout, ACTIVE_ROLLOUT_STATUSES, "promote", actor)
    candidate = locked.candidate
    registry.model_version_verify_integrity(version=candidate)  # re-hashed now, as the tick does before promoting
    if not candidate.routable:
        state = "tampered (failed its integrity check)" if candidate.integrity_failed_at else candidate.status
        raise ValidationError(
            {"version": [f"v{candidate.version} is {state} and cannot be promoted: abort rollout {locked.pk}"]}
        )
    _promote(locked, now=timezone.now(), message="promoted by hand", actor=actor)
    return locked


@transaction.atomic
def rollout_abort(*, rollout: Rollout, actor: Any = None, reason: str = "aborted by hand") -> Rollout:
    """Roll back: the candidate's traffic drops to 0 and the version is marked rolled back."""
    locked = _locked(rollout, ACTIVE_ROLLOUT_STATUSES, "abort", actor)
    _roll_back(locked, RolloutStatus.ABORTED, reason, now=timezone.now(), actor=actor)
    return locked


@transaction.atomic
def model_rollback(
    *, model: RegisteredModel, actor: Any = None, expected: ModelVersion | None = None
) -> tuple[ModelVersion, ModelVersion]:
    """Put the previous production version back: abort an active rollout, or move the production alias back.
    Returns (version taken out of traffic, version now serving). A running experiment refuses it (409): its arms
    hold the traffic, and the production alias stays where it is until the experiment ends. With `expected`, the
    version that would be taken out must be that one (checked under the model's lock), else nothing changes."""
    from registry.traffic import TrafficConflict, traffic_owner

    model = lock_model(model.pk)
    permissions.check(actor, permissions.DEPLOY, model)
    active = Rollout.objects.filter(model=model, status__in=ACTIVE_ROLLOUT_STATUSES).first()
    if active is not None:
        _check_expected(expected, active.candidate, f"rollout {active.pk}'s candidate")
        aborted = rollout_abort(rollout=active, actor=actor, reason="rolled back by hand")
        return aborted.candidate, aborted.baseline
    owner = traffic_owner(model.pk)
    if owner is not None:
        way_out = f"stop or conclude {owner.label} first" if owner.kind == "experiment" else owner.way_out
        raise TrafficConflict(f"cannot roll back {model.name} while {owner} holds its traffic: {way_out}", owner=owner)
    alias = model.aliases.filter(name=PRODUCTION_ALIAS).select_related("version").first()
    if alias is None:
        raise ValidationError({"model": [f"{model.name} has no production version"]})
    current = alias.version
    _check_expected(expected, current, "the production version")
    previous = previous_production(current)
    if previous is None:
        raise ValidationError({"model": [f"{model.name} v{current.version} has no earlier production version"]})
    if not previous.servable:
        raise ValidationError({"model": [f"the previous production version v{previous.version} cannot be served"]})
    registry.alias_move(model=model, name=PRODUCTION_ALIAS, version=previous, actor=actor)
    registry.model_version_set_status(
        version=current, status=VersionStatus.ROLLED_BACK, actor=actor,
        message=f"rolled back to v{previous.version}",
    )  # fmt: skip
    return current, previous


def _check_expected(expected: ModelVersion | None, taken_out: ModelVersion, what: str) -> None:
    if expected is not None and expected.pk != taken_out.pk:
        raise ValidationError(
            {"version": [f"a rollback takes out {what}, v{taken_out.version}, not v{expected.version}: nothing done"]}
        )
