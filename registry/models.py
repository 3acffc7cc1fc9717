"""The model registry's data: models, their immutable versions, aliases and an append-only event log."""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

ALIAS_NAME = RegexValidator(r"^[a-z][a-z0-9_-]{0,62}$", "lowercase letters, digits, '-' or '_', starting with a letter")


class Task(models.TextChoices):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class ArtifactFormat(models.TextChoices):
    SKOPS = "skops"
    ONNX = "onnx"
    JOBLIB = "joblib"


class Runtime(models.TextChoices):
    """What computes a version's predictions: its own artifact's library, or onnxruntime on its ONNX conversion (or
    on the ONNX artifact it was registered with)."""

    SKLEARN = "sklearn"
    ONNX = "onnx"


class VersionStatus(models.TextChoices):
    REGISTERED = "registered"
    VALIDATED = "validated"
    REJECTED = "rejected"
    CANARY = "canary"
    PRODUCTION = "production"
    ARCHIVED = "archived"
    ROLLED_BACK = "rolled_back"


def default_protected_aliases() -> list[str]:
    return ["production"]


class RegisteredModel(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    task = models.CharField(max_length=20, choices=Task.choices)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    tags = models.JSONField(default=dict, blank=True)
    # Quality gates, e.g. ["accuracy >= 0.9", "f1 >= production - 0.01"]; parsed by registry/gates.py.
    gate_rules = models.JSONField(default=list, blank=True)
    # Aliases whose moves need `deploy` on this model (registry/permissions.py); the others need `write`.
    protected_aliases = models.JSONField(default=default_protected_aliases, blank=True)
    # Opt-in: every new version is converted to ONNX after registration (registry/optimisation.py).
    convert_onnx = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    # Artifacts live in the "artifacts" storage (settings.STORAGES); the path is relative to it.
    artifact_path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField()
    format = models.CharField(max_length=10, choices=ArtifactFormat.choices)
    library_versions = models.JSONField(default=dict, blank=True)
    signature = models.JSONField()
    metrics = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    lineage = models.JSONField(default=dict, blank=True)
    evaluation_data_path = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=20, choices=VersionStatus.choices, default=VersionStatus.REGISTERED)
    gate_report = models.JSONField(default=dict, blank=True)
    integrity_failed_at = models.DateTimeField(null=True, blank=True)
    # The ONNX conversion (registry/optimisation.py): its artifact beside the original, with its own sha256, stored
    # only when it passed parity; the report says how it went (status, parity, latencies, the runtime it chose).
    onnx_artifact_path = models.CharField(max_length=500, blank=True)
    onnx_sha256 = models.CharField(max_length=64, blank=True)
    onnx_size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    onnx_conversion = models.JSONField(default=dict, blank=True)
    # What serves it: the measured faster runtime, unless runtime_override says otherwise.
    runtime = models.CharField(max_length=10, choices=Runtime.choices, default=Runtime.SKLEARN)
    runtime_override = models.CharField(max_length=10, choices=Runtime.choices, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model__name", "-version"]
        constraints = [models.UniqueConstraint(fields=["model", "version"], name="unique_version_per_model")]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.version}"

    @property
    def servable(self) -> bool:
        """A rejected or tampered version can never be given traffic."""
        return self.status != VersionStatus.REJECTED and self.integrity_failed_at is None

    @property
    def routable(self) -> bool:
        """The router may send it traffic of its own accord (production, an alias, a split's arm, a fallback): servable,
        and not taken out of traffic (rolled back or archived). Those two still answer an explicit ?version= pin."""
        return self.servable and self.status not in (VersionStatus.ROLLED_BACK, VersionStatus.ARCHIVED)


class ModelAlias(models.Model):
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="aliases")
    name = models.CharField(max_length=63, validators=[ALIAS_NAME])
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model__name", "name"]
        verbose_name_plural = "model aliases"
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="unique_alias_per_model")]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.name}"


class AppendOnlyError(RuntimeError):
    pass


class RegistryEvent(models.Model):
    """Every registry change: who, what, when, before/after. Rows are written once and never changed.

    On Postgres a trigger (migration 0002) refuses UPDATE and DELETE as well, so not even raw SQL from the app can
    rewrite history.
    """

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="events")
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    action = models.CharField(max_length=50)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.model_id}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise AppendOnlyError("registry events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("registry events are append-only")


class GrantPermission(models.TextChoices):
    """What a grant gives on one model (registry/permissions.py): `own` includes the other two."""

    WRITE = "write", "register versions, move unprotected aliases, run experiments and monitors"
    DEPLOY = "deploy", "move protected aliases, start/promote/abort rollouts, roll back, conclude experiments"
    OWN = "own", "owner: write and deploy"


class ModelGrant(models.Model):
    """A permission on one model, given to a user or to a group (exactly one of the two)."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE)
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.CASCADE)
    permission = models.CharField(max_length=10, choices=GrantPermission.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model__name", "permission", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True)
                | models.Q(user__isnull=True, group__isnull=False),
                name="grant_to_user_or_group",
            ),
            models.UniqueConstraint(fields=["model", "user", "permission"], name="unique_user_grant"),
            models.UniqueConstraint(fields=["model", "group", "permission"], name="unique_group_grant"),
        ]

    def __str__(self) -> str:
        return f"{self.permission} on {self.model} to {self.user or self.group}"


class WebhookEndpoint(models.Model):
    """Where registry and rollout events are POSTed (signed, Standard Webhooks): CI/CD listening for new versions,
    gate verdicts, alias moves and rollout decisions. The secret is shown once, when the endpoint is made."""

    url = models.URLField(max_length=2000)
    secret = models.CharField(max_length=100, editable=False)
    # Event type names (registry.webhooks.events); the endpoint hears only these.
    event_types = models.JSONField(default=list)
    model = models.ForeignKey(
        RegisteredModel, null=True, blank=True, on_delete=models.CASCADE, related_name="webhook_endpoints",
        help_text="only this model's events; empty: every model's",
    )  # fmt: skip
    description = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"webhook {self.pk}" + (f" ({self.description})" if self.description else "")


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(models.Model):
    """One event for one endpoint: its message (the same webhook-id on every attempt) and how its attempts went."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    message_id = models.CharField(max_length=64, unique=True)
    event_type = models.CharField(max_length=50)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event_type} to {self.endpoint_id}: {self.status}"


class AuditSource(models.TextChoices):
    """Where a change came from: the HTTP API (raw), the Python client (its X-Modelworks-Client header), the
    console, a management command, or the platform itself (beat, workers, migrations)."""

    API = "api"
    CLIENT = "client"
    ADMIN = "admin"
    COMMAND = "command"
    SYSTEM = "system"


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("the audit log is append-only")

    def delete(self):
        raise AppendOnlyError("the audit log is append-only (old rows go by registry.audit.prune)")


class AuditEntry(models.Model):
    """One state change not already in a domain event log (registry/audit.py writes them). Written once, never
    changed: the ORM refuses, and on Postgres a trigger (migration 0005) refuses UPDATE, and DELETE except of rows
    past the retention by `registry.audit.prune`.

    The actor is kept by id and name, not as a foreign key: deleting a user must not rewrite (or be refused by) the
    trail that names them."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=50, db_index=True)
    source = models.CharField(max_length=10, choices=AuditSource.choices)
    actor_id = models.BigIntegerField(null=True, blank=True, db_index=True, help_text="the user's id")
    api_key_id = models.BigIntegerField(null=True, blank=True, help_text="the API key's id, when a key acted")
    actor_name = models.CharField(max_length=150, blank=True)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    after = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.target}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise AppendOnlyError("the audit log is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("the audit log is append-only")
