"""Serving's data: API keys, per-model serving policy, and the prediction log."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from registry.models import RegisteredModel


class ApiKey(models.Model):
    """A key for machine clients. Only its sha256 is stored; the raw key is shown once at creation.

    Scopes: "predict:<model>", "predict:*", "registry:read", "registry:write".
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, db_index=True, help_text="the key's first characters, to tell keys apart")
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    rate_limit_per_second = models.PositiveIntegerField(default=0, help_text="0 means no limit")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def active(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def allows(self, scope: str) -> bool:
        if scope in self.scopes:
            return True
        family = scope.split(":", 1)[0]
        return f"{family}:*" in self.scopes


class ServingPolicy(models.Model):
    """How one registered model is served; a model without a row gets the defaults."""

    model = models.OneToOneField(RegisteredModel, on_delete=models.CASCADE, related_name="serving_policy")
    deterministic = models.BooleanField(default=True, help_text="off: predictions are never cached")
    cache_ttl_seconds = models.PositiveIntegerField(default=300)
    inference_budget_ms = models.PositiveIntegerField(default=1000, help_text="a model call over this is a failure")
    breaker_consecutive_failures = models.PositiveIntegerField(default=5)
    breaker_error_rate = models.FloatField(default=0.5, help_text="open when the window's error share reaches this")
    breaker_window_seconds = models.PositiveIntegerField(default=30)
    breaker_min_requests = models.PositiveIntegerField(default=20)
    breaker_cooldown_seconds = models.PositiveIntegerField(default=10, help_text="open this long before a probe")

    class Meta:
        verbose_name_plural = "serving policies"

    def __str__(self) -> str:
        return f"serving policy of {self.model}"


class PredictionLog(models.Model):
    """Every prediction, written off the request path in batches; idempotent by request id."""

    request_id = models.CharField(max_length=64, unique=True)
    model_name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    routing_key = models.CharField(max_length=200, blank=True)
    inputs = models.JSONField()
    outputs = models.JSONField()
    latency_ms = models.FloatField()
    cached = models.BooleanField(default=False)
    route_reason = models.CharField(max_length=100)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["model_name", "version", "created_at"], name="predlog_model_version_time")]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model_name} v{self.version}"
