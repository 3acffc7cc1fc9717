"""A/B experiments between versions of one model: arms with bucket ranges, first exposures and a history."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from registry.models import ModelVersion, RegisteredModel
from serving.models import RouteReason


class ExperimentStatus(models.TextChoices):
    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"
    CONCLUDED = "concluded"


class MetricKind(models.TextChoices):
    # Quality from feedback on the arm's own predictions: correct (0/1) for classifiers, absolute error otherwise.
    QUALITY = "quality"
    CONVERSION = "conversion", "conversion rate of a business event"
    MEAN_VALUE = "mean_value", "mean value of a business event per exposed key"


class Experiment(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="experiments")
    description = models.TextField(blank=True)
    # The assignment hash's salt: a new salt reshuffles every key, so it is fixed once the experiment has started.
    salt = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=ExperimentStatus.choices, default=ExperimentStatus.DRAFT)
    # {"kind": "conversion", "event": "purchase"}, {"kind": "mean_value", "event": "order"} or {"kind": "quality"}
    primary_metric = models.JSONField()
    guardrail_metrics = models.JSONField(default=list, blank=True)
    minimum_sample_size = models.PositiveIntegerField(default=100, help_text="exposed keys per arm, at least")
    # Relative lift to detect (0.05 = 5%) with this power at this significance level: the planned sample size.
    minimum_detectable_effect = models.FloatField(default=0.05, validators=[MinValueValidator(0.0001)])
    power = models.FloatField(default=0.8, validators=[MinValueValidator(0.5), MaxValueValidator(0.999)])
    alpha = models.FloatField(default=0.05, validators=[MinValueValidator(0.0001), MaxValueValidator(0.5)])
    keyless_to_control = models.BooleanField(default=True, help_text="requests without a routing key go to control")
    winner = models.ForeignKey("ExperimentArm", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # Exposures since the last allocation change are the ones the sample ratio check compares to today's weights.
    allocation_changed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    concluded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The database's own guarantee behind traffic.claim_model: one running experiment per model.
            models.UniqueConstraint(
                fields=["model"], condition=Q(status="running"), name="one_running_experiment_per_model"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def route_owner(self) -> str:
        """The experiment as the router and the log name it: "experiment:<pk>" (serving.models.RouteReason)."""
        return RouteReason.owner("experiment", self.pk)

    def arm_reason(self, arm: str) -> str:
        """The logged route reason of one of its arms."""
        return RouteReason.arm(self.route_owner, arm)


class ExperimentArm(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="arms")
    name = models.SlugField(max_length=50)
    position = models.PositiveSmallIntegerField(help_text="0 is the control")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="experiment_arms")
    weight = models.PositiveIntegerField()
    ranges = models.JSONField(default=list, help_text="half-open bucket ranges [[low, high], ...] of 0..9999")

    class Meta:
        ordering = ["experiment", "position"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "name"], name="unique_arm_name"),
            models.UniqueConstraint(fields=["experiment", "position"], name="unique_arm_position"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment.name}:{self.name}"

    @property
    def is_control(self) -> bool:
        return self.position == 0

    @property
    def buckets(self) -> int:
        return sum(high - low for low, high in self.ranges)


class Exposure(models.Model):
    """The first time a routing key was served by the experiment, and the arm it got then (written once)."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="exposures")
    key = models.CharField(max_length=200)
    arm = models.CharField(max_length=50)
    first_seen_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["experiment", "key"], name="one_exposure_per_key")]
        indexes = [models.Index(fields=["experiment", "first_seen_at"], name="exposure_time")]

    def __str__(self) -> str:
        return f"{self.key} in {self.arm}"


class ExperimentEvent(models.Model):
    """The experiment's history: created, started, weights changed, stopped, concluded (rows are never changed)."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=50)
    actor_name = models.CharField(max_length=150, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.experiment_id} {self.action}"
