"""Monitoring's data: ground truth, business events, reference samples, drift monitors, their reports and alerts."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from registry.models import ModelVersion, RegisteredModel


class FeedbackMatch(models.TextChoices):
    REQUEST_ID = "request_id"
    ROUTING_KEY = "routing_key"


class Feedback(models.Model):
    """The actual outcome for a logged prediction, joined to serving's PredictionLog by request id.

    Feedback may arrive before its prediction is flushed to the log, or name only a routing key and a time: then
    `request_id` (or `model_name`/`version`) stays empty until `feedback_join_pending` finds the prediction.
    `actual` is one value (class label or number), or a list with one value per row of a batched request.
    """

    request_id = models.CharField(max_length=64, unique=True, null=True, blank=True)
    match = models.CharField(max_length=20, choices=FeedbackMatch.choices, default=FeedbackMatch.REQUEST_ID)
    model_name = models.CharField(max_length=100, blank=True, db_index=True)
    version = models.PositiveIntegerField(null=True, blank=True)
    routing_key = models.CharField(max_length=200, blank=True)
    actual = models.JSONField()
    observed_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    joined_at = models.DateTimeField(null=True, blank=True, help_text="when the logged prediction was found")
    # Feedback given by routing key + time is idempotent on what the client sent: "key|model|time".
    match_key = models.CharField(max_length=400, unique=True, null=True, blank=True)

    class Meta:
        verbose_name_plural = "feedback"
        indexes = [models.Index(fields=["joined_at"], name="feedback_joined")]

    def __str__(self) -> str:
        return f"feedback {self.request_id or self.routing_key}"


class BusinessEvent(models.Model):
    """A business KPI event (a purchase, a churn, a click) attributable to predictions through the routing key."""

    key = models.CharField(max_length=200, help_text="the routing key the predictions were made for")
    name = models.CharField(max_length=100)
    value = models.FloatField(default=1.0)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    event_id = models.CharField(max_length=100, unique=True, null=True, blank=True, help_text="the client's id")

    class Meta:
        indexes = [
            models.Index(fields=["name", "occurred_at"], name="event_name_time"),
            # An experiment's metrics look up each exposed key's events after its first exposure: without this,
            # every exposure scanned all of the event's rows (the demo experiment's page took 1.3 s).
            models.Index(fields=["key", "name", "occurred_at"], name="event_key_name_time"),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value} for {self.key}"


class ReferenceSource(models.TextChoices):
    EVALUATION = "evaluation", "evaluation sample given at registration"
    UPLOAD = "upload", "uploaded dataset"
    TRAFFIC = "traffic", "window of production traffic"


class ReferenceDataset(models.Model):
    """The reference sample drift is measured against, per model version, as a CSV in the artifacts storage."""

    version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE, related_name="reference_dataset")
    source = models.CharField(max_length=20, choices=ReferenceSource.choices)
    path = models.CharField(max_length=500, help_text="relative to the artifacts storage")
    rows = models.PositiveIntegerField()
    columns = models.JSONField(default=list)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"reference of {self.version} ({self.source}, {self.rows} rows)"


class OodProfile(models.Model):
    """What a version's reference sample looks like, for out-of-distribution scores on the prediction path
    (monitoring/ood.py): per numeric feature its range, per categorical feature its values, and a Mahalanobis
    distance over the numeric features, scaled so the reference's farthest row scores 1."""

    version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE, related_name="ood_profile")
    profile = models.JSONField()
    reference_path = models.CharField(max_length=500, help_text="the reference sample it was computed from")
    rows = models.PositiveIntegerField()
    refuse_above = models.FloatField(
        null=True, blank=True, help_text="requests with a row scoring above this are refused (422); empty: flag only"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "OOD profile"

    def __str__(self) -> str:
        return f"OOD profile of {self.version}"


class Correction(models.TextChoices):
    NONE = "none"
    BONFERRONI = "bonferroni"
    BENJAMINI_HOCHBERG = "bh", "Benjamini-Hochberg"


class Monitor(models.Model):
    """A drift and quality check of one model's traffic, run on a schedule (Celery beat) or on demand."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="monitors")
    version = models.PositiveIntegerField(
        null=True, blank=True, help_text="pinned version; empty: the version the production alias points at each run"
    )
    name = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    window_hours = models.PositiveIntegerField(default=24, help_text="current window: the last N hours of the log")
    window_rows = models.PositiveIntegerField(null=True, blank=True, help_text="or the last N logged rows")
    max_rows = models.PositiveIntegerField(default=100_000, help_text="larger windows are sampled to this cap")
    min_rows = models.PositiveIntegerField(default=30, help_text="fewer current rows: no verdict")
    every_minutes = models.PositiveIntegerField(default=60)
    p_threshold = models.FloatField(default=0.05)
    correction = models.CharField(max_length=10, choices=Correction.choices, default=Correction.NONE)
    dataset_drift_share = models.FloatField(default=0.5, help_text="dataset drift when this share of features drift")
    min_wasserstein = models.FloatField(null=True, blank=True, help_text="effect size also required (normalised)")
    min_psi = models.FloatField(null=True, blank=True, help_text="effect size also required for categoricals")
    quality_thresholds = models.JSONField(default=dict, blank=True, help_text='e.g. {"accuracy": 0.9, "rmse": 60}')
    webhook_url = models.URLField(blank=True)
    # Signs the alert webhooks (Standard Webhooks); shown once, when the monitor is made with a webhook URL.
    webhook_secret = models.CharField(max_length=100, blank=True, editable=False)
    last_run_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="unique_monitor_name_per_model")]

    def __str__(self) -> str:
        return f"{self.model.name}: {self.name}"


class WatchedAs(models.TextChoices):
    """How a run chose the version it watched."""

    PINNED = "pinned", "pinned"
    PRODUCTION = "production", "the production version at run time"
    NONE = "none", "no production version to watch"


class DriftReport(models.Model):
    """One monitor run: per feature test, statistic, p-value, effect sizes, verdict and binned histograms.

    `version` is the version the run watched (0 when there was none: see `watched_as`)."""

    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="reports")
    model_name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    # Blank on reports stored before monitors followed production (they watched the busiest version).
    watched_as = models.CharField(max_length=20, choices=WatchedAs.choices, blank=True)
    reference_rows = models.PositiveIntegerField()
    current_rows = models.PositiveIntegerField()
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField()
    drifted_features = models.PositiveIntegerField(default=0)
    tested_features = models.PositiveIntegerField(default=0)
    drift_share = models.FloatField(default=0.0)
    dataset_drift = models.BooleanField(default=False)
    features = models.JSONField(default=list)
    quality = models.JSONField(default=dict, blank=True)
    note = models.TextField(blank=True)
    duration_ms = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.model_name} v{self.version} drift {self.drift_share:.0%} at {self.created_at:%Y-%m-%d %H:%M}"

    @property
    def watching(self) -> str:
        """Which version this run watched and why, e.g. "watching v4: the production version at run time"."""
        if self.watched_as == WatchedAs.NONE:
            return f"{self.model_name} has no production version to watch"
        if not self.watched_as:
            return f"watched v{self.version}"
        return f"watching v{self.version}: {WatchedAs(self.watched_as).label}"


class AlertKind(models.TextChoices):
    DATASET_DRIFT = "dataset_drift"
    QUALITY = "quality"


class AlertStatus(models.TextChoices):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(models.Model):
    """An alert condition of one version while it holds: opened once, resolved once; webhooks are sent for both.

    Its message and details are written when it opens and never rewritten; later runs on the same version only move
    `last_report`. When the monitor starts watching another version, its open alerts are resolved with a
    `resolution` saying so, and the new version's conditions open alerts of their own.
    """

    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="alerts")
    # Null only on alerts opened before alerts were per version whose report is gone.
    version = models.PositiveIntegerField(null=True, blank=True, help_text="the model version the alert is about")
    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    subject = models.CharField(max_length=100, help_text="the metric for quality alerts; empty for dataset drift")
    message = models.TextField()
    details = models.JSONField(default=dict)
    opened_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=200, blank=True, help_text="why it was resolved")
    last_report = models.ForeignKey(DriftReport, null=True, blank=True, on_delete=models.SET_NULL)
    webhook_status = models.CharField(max_length=200, blank=True)
    # Someone has seen it and is on it: it stays open (the monitor still resolves it when the condition clears).
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # db_default: pods still on the previous release create alerts without this column during a rolling upgrade
    acknowledgement = models.TextField(
        blank=True, default="", db_default="", help_text="the note given when it was acknowledged"
    )
    # Silenced: no webhook is sent for it until then (it stays open and is still resolved by the monitor).
    silenced_until = models.DateTimeField(null=True, blank=True, help_text="no webhook is sent before this time")

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            # Deduplication: at most one open alert per monitor, version and condition.
            models.UniqueConstraint(
                fields=["monitor", "version", "kind", "subject"],
                condition=Q(resolved_at__isnull=True),
                name="one_open_alert_per_version",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject} on {self.monitor} v{self.version}".replace("  ", " ")

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    @property
    def status(self) -> str:
        """Open, acknowledged (open, and someone is on it) or resolved: an AlertStatus."""
        if self.resolved_at is not None:
            return AlertStatus.RESOLVED
        return AlertStatus.ACKNOWLEDGED if self.acknowledged_at is not None else AlertStatus.OPEN

    @property
    def silenced(self) -> bool:
        return self.silenced_until is not None and self.silenced_until > timezone.now()


class TrafficMinute(models.Model):
    """The prediction log counted per model, version and minute (monitoring/traffic.py keeps it): what the console's
    charts of traffic read, so that no page counts the log itself. Recomputed for a trailing window every minute."""

    model_name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    minute = models.DateTimeField()
    requests = models.PositiveIntegerField()
    errors = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model_name", "version", "minute"], name="unique_traffic_minute")
        ]
        indexes = [models.Index(fields=["minute"], name="traffic_minute_time")]

    def __str__(self) -> str:
        return f"{self.model_name} v{self.version} {self.minute:%Y-%m-%d %H:%M}: {self.requests}"
