"""Rollouts' data: a rollout (the durable state machine) and its append-only decision log.

The tables keep the names they had when rollouts lived in serving (serving_rollout, serving_rolloutevent): the move
to this app was a state-only migration, and serving/migrations/0003's append-only trigger still guards the events.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from registry.models import ModelVersion, RegisteredModel
from serving.models import RouteReason


class RolloutStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


ACTIVE_ROLLOUT_STATUSES = (RolloutStatus.PENDING, RolloutStatus.RUNNING, RolloutStatus.PAUSED)


def default_stages() -> list[int]:
    return [10, 25, 50, 100]


def default_analysis() -> dict:
    return {}


class Rollout(models.Model):
    """A candidate version taking over a model's production traffic in stages, or (mode shadow) only mirrored traffic.

    A durable state machine advanced by the beat tick (rollouts/services.py): nothing sleeps through a stage, so a
    restarted worker picks the rollout up where the row says it is.
    """

    class Mode(models.TextChoices):
        CANARY = "canary"
        SHADOW = "shadow"

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="rollouts")
    candidate = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="rollouts_as_candidate")
    baseline = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="rollouts_as_baseline")
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.CANARY)
    status = models.CharField(max_length=20, choices=RolloutStatus.choices, default=RolloutStatus.PENDING)
    stages = models.JSONField(default=default_stages, help_text="candidate traffic percent per stage, ascending")
    stage_seconds = models.PositiveIntegerField(default=300)
    stage_index = models.PositiveIntegerField(default=0)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    stage_extensions = models.PositiveIntegerField(default=0)
    shadow_percent = models.FloatField(default=0, help_text="percent of requests mirrored to the candidate")
    salt = models.CharField(max_length=64)
    analysis = models.JSONField(default=default_analysis, blank=True, help_text="thresholds overriding the defaults")
    reason = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "serving_rollout"
        ordering = ["-created_at"]
        constraints = [
            # The database itself refuses a second active rollout on a model, whatever the code does.
            models.UniqueConstraint(
                fields=["model"],
                condition=models.Q(status__in=["pending", "running", "paused"]),
                name="one_active_rollout_per_model",
            )
        ]

    def __str__(self) -> str:
        return f"rollout {self.pk} of {self.candidate}"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_ROLLOUT_STATUSES

    @property
    def route_owner(self) -> str:
        """The rollout as the router and the prediction log name it: "rollout:<pk>" (serving.models.RouteReason)."""
        return RouteReason.owner("rollout", self.pk)

    def arm_reason(self, arm: str) -> str:
        """The logged route reason of one arm ("baseline", "candidate") or of the mirrored copies ("shadow")."""
        return RouteReason.shadow(self.route_owner) if arm == "shadow" else RouteReason.arm(self.route_owner, arm)

    @property
    def candidate_percent(self) -> float:
        """The candidate's share of live traffic now: 0 when pending, finished or shadow-only."""
        if self.mode == self.Mode.SHADOW or self.status not in (RolloutStatus.RUNNING, RolloutStatus.PAUSED):
            return 0.0
        if self.stage_started_at is None:
            return 0.0
        return float(self.stages[self.stage_index])


class RolloutEvent(models.Model):
    """Every decision a rollout made, with the figures it was made from. Append-only."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=40)
    stage_index = models.PositiveIntegerField(null=True, blank=True)
    figures = models.JSONField(default=dict, blank=True)
    message = models.TextField(blank=True)
    actor_name = models.CharField(max_length=150, default="system")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "serving_rolloutevent"  # serving/migrations/0003's trigger keeps it append-only
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.rollout_id} {self.action}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("rollout events are append-only")
        super().save(*args, **kwargs)
