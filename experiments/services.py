"""Experiments' business logic: the one place that writes experiments, their arms and their history.

Functions take keyword arguments and raise django's ValidationError with field-level messages on bad input, having
stored nothing. Starting an experiment claims the model's traffic through registry.traffic.claim_model, so a model
never has a rollout and an experiment (or two experiments) splitting its traffic at once.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from config.storable import check_storable
from experiments import allocation, parsing
from experiments.models import Experiment, ExperimentArm, ExperimentEvent, ExperimentStatus, MetricKind
from registry import permissions, refs
from registry import services as registry
from registry.locking import lock_model, retry_on_conflict
from registry.models import ModelVersion, RegisteredModel, VersionStatus
from registry.traffic import TrafficConflict, TrafficOwner, claim_model
from rollouts import services as rollouts

MAX_WEIGHT = 1_000_000
ARM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
# Versions that passed their quality gates; "registered" ones have not been evaluated, the others cannot get traffic.
EXPERIMENTABLE = {VersionStatus.VALIDATED, VersionStatus.CANARY, VersionStatus.PRODUCTION}


def _arm_problem(version: ModelVersion) -> str | None:
    """Why the version cannot be an arm (None when it can): it must be routable (registry's word for "the router may
    send it traffic of its own accord": not rejected, rolled back, archived or tampered) and past its gates."""
    if version.integrity_failed_at is not None:
        return f"version {version.version} is tampered (failed its integrity check)"
    if not version.routable or version.status not in EXPERIMENTABLE:
        return f"version {version.version} is {version.status}"
    return None


def _actor_name(actor: Any) -> str:
    return getattr(actor, "username", "") or "system"


def _event(experiment: Experiment, action: str, actor: Any, *, before=None, after=None, message: str = "") -> None:
    ExperimentEvent.objects.create(
        experiment=experiment, action=action, actor_name=_actor_name(actor), before=before, after=after,
        message=message,
    )  # fmt: skip


def metric_problems(spec: Any) -> list[str]:
    """What is wrong with a metric spec such as {"kind": "conversion", "event": "purchase"} (empty when fine)."""
    if not isinstance(spec, dict):
        return ['must be text such as "conversion:purchase" or an object: {"kind": "conversion", "event": "purchase"}']
    kind = spec.get("kind")
    if kind not in MetricKind.values:
        return [f"kind must be one of {', '.join(MetricKind.values)}"]
    unknown = set(spec) - {"kind", "event", "name"}
    if unknown:
        return [f"unknown fields: {', '.join(sorted(unknown))}"]
    if kind != MetricKind.QUALITY:
        event = spec.get("event")
        if not isinstance(event, str) or not event or len(event) > 100:
            return [f"a {kind} metric names its business event: 'event' (1 to 100 characters)"]
    elif "event" in spec:
        return ["a quality metric has no event: it is computed from feedback on the arm's predictions"]
    return []


def _check_metrics(primary: Any, guardrails: Any, errors: dict[str, list[str]]) -> None:
    problems = metric_problems(primary)
    if problems:
        errors["primary_metric"] = problems
    if not isinstance(guardrails, list):
        errors["guardrail_metrics"] = ["must be a list of metrics"]
        return
    for i, spec in enumerate(guardrails):
        for problem in metric_problems(spec):
            errors.setdefault("guardrail_metrics", []).append(f"[{i}] {problem}")


def _arm_versions(model: RegisteredModel, arms: Any, errors: dict[str, list[str]]) -> list[ModelVersion]:
    """The validated versions the arms name, in arm order; problems go into `errors["arms"]`."""
    problems: list[str] = []
    if not isinstance(arms, list) or len(arms) < 2:
        errors["arms"] = ["give at least two arms: the first is the control"]
        return []
    names, versions = [], []
    for i, arm in enumerate(arms):
        if not isinstance(arm, dict):
            problems.append(f'[{i}] must be an object such as {{"name": "control", "version": 1, "weight": 50}}')
            continue
        name, number, weight = arm.get("name"), arm.get("version"), arm.get("weight")
        if not isinstance(name, str) or not ARM_NAME.match(name):
            problems.append(f"[{i}] name must be 1 to 50 lowercase letters, digits, '-' or '_'")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= MAX_WEIGHT:
            problems.append(f"[{i}] weight must be an integer from 1 to {MAX_WEIGHT}")
        names.append(name)
        try:
            version = refs.resolve(model, number)  # a number, models:/NAME/3 or models:/NAME@alias
        except ValidationError as exc:
            problems.extend(f"[{i}] {message}" for message in exc.message_dict["version"])
            continue
        if _arm_problem(version):
            problems.append(f"[{i}] {_arm_problem(version)}: only validated versions can be in an experiment")
        else:
            versions.append(version)
    if len(set(map(str, names))) != len(names):
        problems.append("arm names must differ")
    if len({v.pk for v in versions}) != len(versions):
        problems.append("each arm needs its own version")
    if problems:
        errors["arms"] = problems
    return versions


@retry_on_conflict
@transaction.atomic
def experiment_create(
    *,
    model: RegisteredModel,
    name: str,
    arms: list[dict[str, Any]],
    primary_metric: dict[str, Any],
    guardrail_metrics: list[dict[str, Any]] | None = None,
    description: str = "",
    salt: str | None = None,
    minimum_sample_size: int = 100,
    minimum_detectable_effect: float = 0.05,
    power: float = 0.8,
    alpha: float = 0.05,
    keyless_to_control: bool = True,
    actor: Any = None,
) -> Experiment:
    """A draft experiment: arms [{"name": "control", "version": 1, "weight": 50}, ...], the first being the control.

    An arm's version is a number or a reference (models:/NAME/3, models:/NAME@alias); a metric is an object such as
    {"kind": "conversion", "event": "purchase"} or its short form "conversion:purchase" (stored as the object)."""
    primary_metric = parsing.metric_spec(primary_metric)
    if isinstance(guardrail_metrics, list):
        guardrail_metrics = [parsing.metric_spec(spec) for spec in guardrail_metrics]
    check_storable(
        name=name, description=description, salt=salt, primary_metric=primary_metric,
        guardrail_metrics=guardrail_metrics, arms=arms,
    )  # fmt: skip
    errors: dict[str, list[str]] = {}
    guardrail_metrics = [] if guardrail_metrics is None else guardrail_metrics
    _check_metrics(primary_metric, guardrail_metrics, errors)
    versions = _arm_versions(model, arms, errors)
    if Experiment.objects.filter(name=name).exists():
        errors["name"] = [f"an experiment named '{name}' already exists"]
    if errors:
        raise ValidationError(errors)
    experiment = Experiment(
        name=name, model=model, description=description, salt=salt or f"{name}-{secrets.token_hex(4)}",
        primary_metric=primary_metric, guardrail_metrics=guardrail_metrics, minimum_sample_size=minimum_sample_size,
        minimum_detectable_effect=minimum_detectable_effect, power=power, alpha=alpha,
        keyless_to_control=keyless_to_control, created_by=actor if getattr(actor, "pk", None) else None,
    )  # fmt: skip
    experiment.full_clean()
    experiment.save()
    ranges = allocation.initial_ranges([arm["weight"] for arm in arms])
    ExperimentArm.objects.bulk_create(
        ExperimentArm(
            experiment=experiment, name=arm["name"], position=position, version=version, weight=arm["weight"],
            ranges=[list(r) for r in arm_ranges],
        )
        for position, (arm, version, arm_ranges) in enumerate(zip(arms, versions, ranges, strict=True))
    )  # fmt: skip
    _event(experiment, "experiment.created", actor, after=_allocation(experiment))
    return experiment


def _allocation(experiment: Experiment) -> dict[str, Any]:
    return {
        arm.name: {"version": arm.version.version, "weight": arm.weight, "ranges": arm.ranges}
        for arm in experiment.arms.select_related("version").order_by("position")
    }


def _locked(experiment: Experiment) -> Experiment:
    """The experiment's row locked after its model's (registry.locking's order), the model row attached."""
    model = lock_model(experiment.model_id)
    locked = Experiment.objects.select_for_update(of=("self",)).get(pk=experiment.pk)
    locked.model = model
    return locked


@retry_on_conflict
@transaction.atomic
def experiment_start(*, experiment: Experiment, actor: Any = None) -> Experiment:
    """Give the experiment its model's production traffic, unless a rollout or another experiment holds it."""
    # The model row first (claim_model locks it), then the experiment: registry.locking's one lock order.
    try:
        claim_model(experiment.model, starting=f"experiment '{experiment.name}'")
    except TrafficConflict as exc:
        raise TrafficConflict(exc.message, field="status", owner=exc.owner) from None
    locked = _locked(experiment)
    permissions.check(actor, permissions.WRITE, locked.model)
    if locked.status != ExperimentStatus.DRAFT:
        raise ValidationError({"status": [f"experiment '{locked.name}' is {locked.status}; only a draft can start"]})
    # Read under the model's row lock: every status change (rollback, archive, an alias move) takes it too.
    problems = [
        f"arm {arm.name}: {_arm_problem(arm.version)} and can no longer get traffic"
        for arm in locked.arms.select_related("version").order_by("position")
        if _arm_problem(arm.version)
    ]
    if problems:
        raise ValidationError({"arms": problems})
    now = timezone.now()
    locked.status, locked.started_at, locked.allocation_changed_at = ExperimentStatus.RUNNING, now, now
    try:
        with transaction.atomic():
            locked.save(update_fields=["status", "started_at", "allocation_changed_at"])
    except IntegrityError:  # claim_model's checks all passed yet the partial unique index refused: a race lost
        raise ValidationError({"status": [f"{locked.model.name} already has a running experiment"]}) from None
    _event(locked, "experiment.started", actor, before={"status": "draft"}, after={"status": locked.status})
    return locked


@retry_on_conflict
@transaction.atomic
def experiment_set_weights(*, experiment: Experiment, weights: dict[str, int], actor: Any = None) -> Experiment:
    """New weights per arm name. Keys only move out of arms that shrink, and no more of them than needed."""
    locked = _locked(experiment)
    permissions.check(actor, permissions.WRITE, locked.model)
    if locked.status not in (ExperimentStatus.DRAFT, ExperimentStatus.RUNNING):
        raise ValidationError({"status": [f"experiment '{locked.name}' is {locked.status}: its weights are final"]})
    arms = list(locked.arms.order_by("position"))
    problems = []
    if not isinstance(weights, dict) or set(weights) != {arm.name for arm in arms}:
        problems.append(f"give a weight for each arm: {', '.join(arm.name for arm in arms)}")
    elif any(not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= MAX_WEIGHT for w in weights.values()):
        problems.append(f"weights are integers from 0 to {MAX_WEIGHT}")
    elif weights[arms[0].name] == 0 or sum(weights.values()) == 0:
        problems.append("the control keeps a positive weight")
    if problems:
        raise ValidationError({"weights": problems})
    before = _allocation(locked)
    current = [[(low, high) for low, high in arm.ranges] for arm in arms]
    new_ranges = allocation.reallocate(current, [weights[arm.name] for arm in arms])
    moved = [list(map(list, ranges)) for ranges in new_ranges] != [arm.ranges for arm in arms]
    for arm, ranges in zip(arms, new_ranges, strict=True):
        arm.weight, arm.ranges = weights[arm.name], [list(r) for r in ranges]
        arm.save(update_fields=["weight", "ranges"])
    # Only a change of the buckets starts a new allocation period (results and the sample ratio check count from
    # it): the same split written with other numbers (50/50 -> 1/1) leaves every key where it was.
    if locked.status == ExperimentStatus.RUNNING and moved:
        locked.allocation_changed_at = timezone.now()
        locked.save(update_fields=["allocation_changed_at"])
    _event(locked, "experiment.weights_changed", actor, before=before, after=_allocation(locked))
    return locked


@retry_on_conflict
@transaction.atomic
def experiment_stop(*, experiment: Experiment, actor: Any = None) -> Experiment:
    """Send the model's traffic back to its production alias; the results stay for analysis and conclusion."""
    locked = _locked(experiment)
    permissions.check(actor, permissions.WRITE, locked.model)
    if locked.status != ExperimentStatus.RUNNING:
        raise ValidationError({"status": [f"experiment '{locked.name}' is {locked.status}, not running"]})
    locked.status, locked.stopped_at = ExperimentStatus.STOPPED, timezone.now()
    locked.save(update_fields=["status", "stopped_at"])
    _event(locked, "experiment.stopped", actor, before={"status": "running"}, after={"status": locked.status})
    return locked


class Promotion(models.TextChoices):
    DIRECT = "direct", "move the production alias now"
    ROLLOUT = "rollout", "start a staged rollout of the winner"


@retry_on_conflict
@transaction.atomic
def experiment_conclude(
    *, experiment: Experiment, winner: str, promote: str = Promotion.DIRECT, actor: Any = None, message: str = ""
) -> Experiment:
    """End the experiment with a winner and promote the winner's version.

    Directly: the production alias moves through the registry's own service, which records an `alias.moved` event.
    Through a rollout: serving's staged rollout of the winner starts (it claims the model the experiment just let go
    of, in the same transaction). The experiment's history records the conclusion either way. A control that wins
    leaves production where it is. The experiment is concluded (so no longer the model's traffic owner) before either,
    which is what lets the registry's owner check pass; a refusal of either undoes the conclusion too.
    """
    locked = _locked(experiment)
    permissions.check(actor, permissions.DEPLOY, locked.model)  # concluding moves production (registry/permissions)
    if locked.status not in (ExperimentStatus.RUNNING, ExperimentStatus.STOPPED):
        raise ValidationError({"status": [f"experiment '{locked.name}' is {locked.status}: run it before concluding"]})
    if promote not in Promotion.values:
        raise ValidationError({"promote": [f"must be one of {', '.join(Promotion.values)}"]})
    arm = locked.arms.select_related("version").filter(name=winner).first()
    if arm is None:
        names = ", ".join(locked.arms.order_by("position").values_list("name", flat=True))
        raise ValidationError({"winner": [f"no arm named '{winner}' (arms: {names})"]})
    before = {"status": locked.status}
    now = timezone.now()
    locked.stopped_at = locked.stopped_at or now
    locked.status, locked.concluded_at, locked.winner = ExperimentStatus.CONCLUDED, now, arm
    locked.save(update_fields=["status", "stopped_at", "concluded_at", "winner"])
    after = {"status": locked.status, "winner": arm.name, "version": arm.version.version, "promote": promote}
    production = locked.model.aliases.filter(name=registry.PRODUCTION_ALIAS).values_list("version_id", flat=True)
    if production.first() == arm.version_id:
        after["promote"] = "none: the winner already serves production"
    elif promote == Promotion.ROLLOUT:
        after["rollout"] = rollouts.rollout_start(model=locked.model, candidate=arm.version, actor=actor).pk
    else:
        registry.alias_set(model=locked.model, name=registry.PRODUCTION_ALIAS, version=arm.version, actor=actor)
    _event(locked, "experiment.concluded", actor, before=before, after=after, message=message)
    return locked


def running_experiment_owner(model_id: int) -> TrafficOwner | None:
    """registry.traffic's owner check: the running experiment holding this model's traffic, if any."""
    found = Experiment.objects.filter(model_id=model_id, status=ExperimentStatus.RUNNING).values_list("pk", "name")
    row = found.first()
    if row is None:
        return None
    pk, name = row
    arms = ExperimentArm.objects.filter(experiment_id=pk).values_list("version_id", flat=True)
    return TrafficOwner("experiment", pk, f"experiment '{name}'", frozenset(arms))
