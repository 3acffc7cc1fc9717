"""Serving's data: API keys, per-model serving policy, the prediction log and its dead letters."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from registry.models import RegisteredModel


class ApiKey(models.Model):
    """A key for machine clients. Only its sha256 is stored; the raw key is shown once at creation.

    Scopes: "predict:<model>", "predict:*", "registry:read", "registry:write", "deploy:<model>", "deploy:*"
    (what each allows: registry/permissions.py).
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


class Outcome(models.TextChoices):
    """What happened to a logged request. Rollouts, monitoring and experiments read the log through these."""

    OK = "ok", "answered by the routed version"
    FALLBACK = "fallback", "the routed version failed and its fallback answered (the row's version is the fallback's)"
    ERROR = "error", "nobody answered (503)"
    SHADOW = "shadow", "a mirrored copy whose answer was never returned"
    SHADOW_REFUSED = "shadow-inv", "a mirrored copy the shadow version refused as input it cannot take"
    SHADOW_FAILED = "shadow-err", "a mirrored copy the shadow version failed to answer"

    @classmethod
    def failures(cls) -> tuple[str, ...]:
        """The outcomes that count against the routed version."""
        return (cls.FALLBACK, cls.ERROR)

    @classmethod
    def shadows(cls) -> tuple[str, ...]:
        return (cls.SHADOW, cls.SHADOW_REFUSED, cls.SHADOW_FAILED)


class RouteReason:
    """The log's `route_reason` vocabulary, spelt in one place:
    "pinned" (?version=), "alias:<name>" (?alias= or production), "<owner>:<arm>" for a split's arm, where the
    owner is "rollout:<pk>" or "experiment:<pk>", "<owner>:shadow" for a mirrored copy. The answer's `route` says
    "fallback:<why>" when the fallback answered; the log row keeps the route that was chosen, with outcome fallback.
    """

    PINNED = "pinned"

    @staticmethod
    def alias(name: str) -> str:
        return f"alias:{name}"

    @staticmethod
    def owner(kind: str, pk: int) -> str:
        return f"{kind}:{pk}"

    @staticmethod
    def arm(owner: str, arm: str) -> str:
        return f"{owner}:{arm}"

    @staticmethod
    def shadow(owner: str) -> str:
        return f"{owner}:shadow"

    @staticmethod
    def fallback(failure: str) -> str:
        return f"fallback:{failure}"

    @staticmethod
    def routed_by(owner: str) -> str:
        """The prefix of every reason of this owner's routes (for `route_reason__startswith`)."""
        return f"{owner}:"


def logged_outputs(outputs: Any) -> tuple[list[Any], list[list[float]] | None]:
    """(predictions, probabilities) of a log row's `outputs`; ([], None) for a row nobody answered."""
    if not isinstance(outputs, dict):
        return [], None
    return outputs.get("predictions") or [], outputs.get("probabilities")


class PredictionLog(models.Model):
    """Every prediction, written off the request path in batches.

    Idempotent per request, not per request id: a retry of the same request (same id, model, outcome and logged
    inputs within MODELWORKS_LOG_RETRY_WINDOW_S) logs once, while a client reusing an id for other bodies gets a row
    for each. `retry_key` is that scope's digest (serving/prediction_log.py).
    """

    request_id = models.CharField(max_length=64)
    # db_default: pods still on the previous release write the log without this column during a rolling upgrade
    retry_key = models.CharField(max_length=32, default="", db_default="", blank=True)
    model_name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    routing_key = models.CharField(max_length=200, blank=True)
    inputs = models.JSONField()
    outputs = models.JSONField()
    latency_ms = models.FloatField()
    cached = models.BooleanField(default=False)
    route_reason = models.CharField(max_length=100, help_text="why this route: see RouteReason")
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.OK)
    created_at = models.DateTimeField(db_index=True)
    # Who called: "key:<id>" (an API key) or "user:<id>" (a token or the console's session); empty for rows from
    # before it was recorded and for shadow copies. db_default: pods on the previous release write without it.
    caller = models.CharField(max_length=40, default="", db_default="", blank=True)
    # Out-of-distribution scores against the version's reference profile, one per row (above 1: outside it), and
    # how many rows were flagged; null when the version has no profile or scoring is off (monitoring/ood.py).
    ood_scores = models.JSONField(null=True, blank=True)
    ood_flagged = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["model_name", "version", "created_at"], name="predlog_model_version_time"),
            models.Index(fields=["route_reason", "created_at"], name="predlog_route_time"),
            # Who was served what, by key: business impact on the monitoring dashboard, a subject's erasure.
            # Partial: keyless requests (most batch traffic) pay nothing for it.
            models.Index(
                fields=["routing_key", "model_name", "created_at"],
                name="predlog_key_model_time",
                condition=~models.Q(routing_key=""),
            ),
        ]
        constraints = [
            # Also the index for every lookup by request id (feedback, shadow pairs).
            models.UniqueConstraint(fields=["request_id", "model_name", "retry_key"], name="predlog_one_per_request"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model_name} v{self.version}"


class DeadLetter(models.Model):
    """A buffered row the database refused for its content (it can never be written), kept for inspection.

    `payload` is the row as ASCII-escaped JSON, so NUL, lone surrogates and huge integers survive as written."""

    source = models.CharField(max_length=40, db_index=True, help_text="prediction_log or exposures")
    payload = models.TextField()
    error = models.TextField()
    created_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"dead letter {self.pk} from {self.source}"


class AsyncStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # the synchronous endpoint would have answered 200
    FAILED = "failed"  # it would have answered this error (status_code, answer), or the job never ran in time


class CallbackStatus(models.TextChoices):
    NONE = "none"  # no callback URL given
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class AsyncPrediction(models.Model):
    """A prediction request answered over the queue (`Prefer: respond-async`): the request as sent, then the answer
    the synchronous endpoint would have given (serving/asynchronous.py). Deleted by beat once `expires_at` passes:
    the body holds the caller's inputs."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model_name = models.CharField(max_length=100)
    # Null when not sent: "?version=" (empty) is sent, and refused as the synchronous endpoint refuses it.
    version = models.CharField(max_length=20, null=True, blank=True, help_text="?version= as sent")  # noqa: DJ001
    alias = models.CharField(max_length=200, null=True, blank=True, help_text="?alias= as sent")  # noqa: DJ001
    body = models.BinaryField(help_text="the request body as sent")
    request_id = models.CharField(max_length=64)
    caller = models.CharField(max_length=40, help_text="who asked (key:<id>, user:<id>): only they or an admin read it")
    status = models.CharField(max_length=10, choices=AsyncStatus.choices, default=AsyncStatus.QUEUED)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True, help_text="the synchronous answer's")
    answer = models.JSONField(null=True, blank=True, help_text="the synchronous answer's body")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="runs started (a lost worker's run is redone)")
    callback_url = models.TextField(blank=True)
    callback_secret = models.CharField(max_length=60, blank=True)
    callback_status = models.CharField(max_length=10, choices=CallbackStatus.choices, default=CallbackStatus.NONE)
    callback_outcome = models.CharField(max_length=200, blank=True)
    callback_attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["status", "created_at"], name="asyncpred_status_time")]

    def __str__(self) -> str:
        return f"async prediction {self.id} ({self.model_name}, {self.status})"


from serving.batch_models import BatchChunk, BatchJob, BatchSchedule  # noqa: E402,F401 - batch scoring's tables
