"""What the console's home page says is live: one read across every app, per model, plus a recent-activity feed.

It lives in config/ because it is the one page that joins every app (registry, serving, rollouts, experiments,
monitoring); the apps themselves keep their layering. Every figure is a bounded aggregate: the last hour of the
prediction log is read from its per-minute rollup (monitoring/traffic.py), never counted whole.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from experiments.models import Experiment, ExperimentEvent, ExperimentStatus, Exposure
from monitoring import traffic
from monitoring.models import Alert, DriftReport
from registry.models import ModelAlias, RegisteredModel, RegistryEvent
from rollouts.models import ACTIVE_ROLLOUT_STATUSES, Rollout, RolloutEvent

TRAFFIC_WINDOW = timedelta(hours=1)
ACTIVITY_ITEMS = 20


@dataclass
class ModelStatus:
    model: RegisteredModel
    production: int | None
    requests: int = 0
    errors: int = 0
    per_minute: list[tuple[datetime, int]] = field(default_factory=list)
    rollout: dict[str, Any] | None = None
    experiment: dict[str, Any] | None = None
    open_alerts: int = 0
    drift: DriftReport | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class Activity:
    at: datetime
    source: str
    model: str
    text: str
    actor: str
    url: str


def _words(action: str) -> str:
    """An event's action as words: `alias.created` reads "alias created"."""
    return action.replace(".", " ").replace("_", " ")


def _minutes(now: datetime) -> list[datetime]:
    """The last hour as minutes: from the one an hour ago to the current one (61 buckets, both partly covered)."""
    start = (now - TRAFFIC_WINDOW).replace(second=0, microsecond=0)
    return [start + timedelta(minutes=i) for i in range(61)]


def _traffic(statuses: dict[str, ModelStatus], now: datetime) -> None:
    minutes = _minutes(now)
    counted = traffic.traffic_per_minute(list(statuses), since=minutes[0], now=now)
    for name, status in statuses.items():
        per_minute: dict[datetime, int] = defaultdict(int)
        for by_minute in counted.get(name, {}).values():
            for minute, (requests, errors) in by_minute.items():
                status.requests += requests
                status.errors += errors
                per_minute[minute] += requests
        status.per_minute = [(m, per_minute.get(m, 0)) for m in minutes]


def _rollouts(statuses: dict[str, ModelStatus]) -> None:
    active = Rollout.objects.filter(status__in=ACTIVE_ROLLOUT_STATUSES, model__name__in=statuses)
    for rollout in active.select_related("model", "candidate", "baseline").order_by("created_at"):
        stage_percent = rollout.stages[rollout.stage_index] if rollout.stage_index < len(rollout.stages) else None
        next_decision = None
        if rollout.status == "running" and rollout.stage_started_at is not None:
            next_decision = rollout.stage_started_at + timedelta(seconds=rollout.stage_seconds)
        statuses[rollout.model.name].rollout = {
            "rollout": rollout,
            "url": reverse("admin:rollouts_rollout_change", args=[rollout.pk]),
            "stage": rollout.stage_index + 1,
            "stages": len(rollout.stages),
            "candidate_percent": stage_percent,
            "next_decision": next_decision,
        }


def _experiments(statuses: dict[str, ModelStatus]) -> None:
    running = Experiment.objects.filter(status=ExperimentStatus.RUNNING, model__name__in=statuses)
    experiments = list(running.select_related("model").prefetch_related("arms__version").order_by("started_at"))
    exposed = defaultdict(dict)
    for row in (
        Exposure.objects.filter(experiment__in=experiments).values("experiment_id", "arm").annotate(n=Count("id"))
    ):
        exposed[row["experiment_id"]][row["arm"]] = row["n"]
    for experiment in experiments:
        arms = [
            {
                "name": arm.name,
                "version": arm.version.version,
                "weight": arm.weight,
                "exposed": exposed[experiment.pk].get(arm.name, 0),
            }
            for arm in experiment.arms.all()
        ]
        smallest = min((a["exposed"] for a in arms), default=0)
        target = experiment.minimum_sample_size
        statuses[experiment.model.name].experiment = {
            "experiment": experiment,
            "url": reverse("admin:experiments_experiment_change", args=[experiment.pk]),
            "arms": arms,
            "progress": min(smallest / target, 1.0) if target else 1.0,
            "verdict": (
                "enough keys per arm for a verdict: read the results"
                if target and smallest >= target
                else f"collecting: {smallest} of {target} keys in the smallest arm"
            ),
        }


def _monitoring(statuses: dict[str, ModelStatus]) -> None:
    open_alerts = (
        Alert.objects.filter(resolved_at__isnull=True, monitor__model__name__in=statuses)
        .values("monitor__model__name")
        .annotate(n=Count("id"))
    )
    for row in open_alerts:
        statuses[row["monitor__model__name"]].open_alerts = row["n"]
    for name, status in statuses.items():
        status.drift = (
            DriftReport.objects.filter(model_name=name, tested_features__gt=0).order_by("-created_at", "-id").first()
        )


def model_statuses(now: datetime | None = None, names: list[str] | None = None) -> list[ModelStatus]:
    """Per model (all, or those named), in name order: what serves, how busy and healthy it is, what is changing,
    what is wrong."""
    now = now or timezone.now()
    models = RegisteredModel.objects.order_by("name")
    if names is not None:
        models = models.filter(name__in=names)
    production = {
        alias.model_id: alias.version.version
        for alias in ModelAlias.objects.filter(name="production", model__in=models).select_related("version")
    }
    statuses = {model.name: ModelStatus(model=model, production=production.get(model.pk)) for model in models}
    if statuses:
        _traffic(statuses, now)
        _rollouts(statuses)
        _experiments(statuses)
        _monitoring(statuses)
    return list(statuses.values())


def recent_activity(limit: int = ACTIVITY_ITEMS) -> list[Activity]:
    """The latest changes from the registry's, the rollouts' and the experiments' event logs, newest first."""
    items: list[Activity] = []
    for event in RegistryEvent.objects.select_related("model", "version").order_by("-created_at", "-id")[:limit]:
        version = f" v{event.version.version}" if event.version_id else ""
        items.append(
            Activity(
                at=event.created_at,
                source="registry",
                model=event.model.name,
                text=f"{_words(event.action)}{version}" + (f": {event.message}" if event.message else ""),
                actor=event.actor_name or "system",
                url=reverse("admin:model_page", args=[event.model.name]),
            )
        )
    for event in RolloutEvent.objects.select_related("rollout__model", "rollout__candidate").order_by(
        "-created_at", "-id"
    )[:limit]:
        rollout = event.rollout
        stage = f" (stage {event.stage_index + 1})" if event.stage_index is not None else ""
        items.append(
            Activity(
                at=event.created_at,
                source="rollout",
                model=rollout.model.name,
                text=f"rollout of v{rollout.candidate.version}: {_words(event.action)}{stage}",
                actor=event.actor_name,
                url=reverse("admin:rollouts_rollout_change", args=[rollout.pk]),
            )
        )
    for event in ExperimentEvent.objects.select_related("experiment__model").order_by("-created_at", "-id")[:limit]:
        experiment = event.experiment
        items.append(
            Activity(
                at=event.created_at,
                source="experiment",
                model=experiment.model.name,
                text=f"experiment {experiment.name}: {_words(event.action)}",
                actor=event.actor_name or "system",
                url=reverse("admin:experiments_experiment_change", args=[experiment.pk]),
            )
        )
    items.sort(key=lambda item: item.at, reverse=True)
    return items[:limit]
