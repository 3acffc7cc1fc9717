"""The feature store's data: entities, feature views, every value ever written (the offline store), and the
bookkeeping of materialization and batch ingests.

The online store (latest value per entity and view) is not a Django model: it lives in Redis, or in `OnlineValue`
when the platform runs embedded without Redis (features/online.py).
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

NAME = RegexValidator(r"^[a-z][a-z0-9_]{0,62}$", "lowercase letters, digits or '_', starting with a letter")


class ValueType(models.TextChoices):
    STRING = "string"
    INT = "int"


class Entity(models.Model):
    """What features describe (a customer, a patient); `join_key` is the column that identifies one."""

    name = models.CharField(max_length=63, unique=True, validators=[NAME])
    join_key = models.CharField(max_length=63, validators=[NAME])
    value_type = models.CharField(max_length=10, choices=ValueType.choices, default=ValueType.STRING)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "entities"

    def __str__(self) -> str:
        return self.name


class FeatureView(models.Model):
    """A group of typed features of one entity, written and read together, valid for `ttl_seconds` after their
    event time. `features` is a list of {"name", "dtype", "description"} (dtype: float, int, bool, string)."""

    name = models.CharField(max_length=63, unique=True, validators=[NAME])
    entity = models.ForeignKey(Entity, on_delete=models.PROTECT, related_name="views")
    features = models.JSONField()
    ttl_seconds = models.PositiveIntegerField()
    # The column of ingested/pushed rows that gives each value's created time (a row without it: the write time);
    # "" when the view takes no created times (the default name was a feature of it already).
    created_timestamp_column = models.CharField(
        max_length=63, default="created_timestamp", blank=True, validators=[NAME]
    )
    owner = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    # Freshness, kept by the writers so the admin never scans the offline store for it.
    newest_event_at = models.DateTimeField(null=True, blank=True)
    # Incremental materialization has copied every value created up to here to the online store.
    materialized_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def feature_names(self) -> list[str]:
        return [feature["name"] for feature in self.features]

    @property
    def dtypes(self) -> dict[str, str]:
        return {feature["name"]: feature["dtype"] for feature in self.features}


class FeatureValue(models.Model):
    """The offline store: one row per write of a view's features for one entity at one event time. Never updated.

    `created_ts` is when the value became known (the row's created timestamp, else the write time), `written_at` when
    it reached this table, and `id` the write order. Of the values of one entity the newest is the one with the latest
    event time, then the latest created time, then the last written (highest id): "latest as of t" reads walk the
    (view, entity_key, event_ts desc, created_ts desc, id desc) index. Materialization scans (view, written_at).
    """

    view = models.ForeignKey(FeatureView, on_delete=models.PROTECT, related_name="values")
    entity_key = models.CharField(max_length=200)
    event_ts = models.DateTimeField()
    created_ts = models.DateTimeField()
    written_at = models.DateTimeField(default=timezone.now, db_default=Now())
    data = models.JSONField()

    class Meta:
        indexes = [
            models.Index(
                "view", "entity_key", models.F("event_ts").desc(), models.F("created_ts").desc(), models.F("id").desc(),
                name="featurevalue_latest_as_of",
            ),
            models.Index(fields=["view", "written_at"], name="featurevalue_written"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.view_id}:{self.entity_key}@{self.event_ts:%Y-%m-%d %H:%M:%S}"


class OnlineValue(models.Model):
    """The online store when no Redis is configured: the latest value per view and entity, in the database.

    Times are integer microseconds so "newer" is one portable row-value comparison in SQL: (event_us, created_us,
    value_id), value_id being the offline row's id (its write order; 0 for rows written before it was recorded).
    """

    view = models.ForeignKey(FeatureView, on_delete=models.CASCADE, related_name="+")
    entity_key = models.CharField(max_length=200)
    event_us = models.BigIntegerField()
    created_us = models.BigIntegerField()
    value_id = models.BigIntegerField(default=0, db_default=0)
    data = models.JSONField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["view", "entity_key"], name="unique_online_value")]

    def __str__(self) -> str:
        return f"{self.view_id}:{self.entity_key}"


class MaterializationRun(models.Model):
    view = models.ForeignKey(FeatureView, on_delete=models.CASCADE, related_name="materializations")
    mode = models.CharField(max_length=20)  # "incremental" or "range"
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField()
    rows_read = models.PositiveIntegerField(default=0)
    rows_written = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    class Meta:
        ordering = ["-finished_at", "-id"]

    def __str__(self) -> str:
        return f"{self.view_id} {self.mode} {self.finished_at:%Y-%m-%d %H:%M:%S}"


class MaterializationJob(models.Model):
    """A materialization asked for from the console or the API and run by a worker: queued, running (with how many
    of the values to copy are read so far), then done (its run), busy (another run held the view) or failed."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        BUSY = "busy", "busy: another materialization held the view"
        FAILED = "failed"

    view = models.ForeignKey(FeatureView, on_delete=models.CASCADE, related_name="materialization_jobs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    rows_total = models.PositiveBigIntegerField(null=True, blank=True)
    rows_read = models.PositiveBigIntegerField(default=0)
    rows_written = models.PositiveBigIntegerField(default=0)
    message = models.TextField(blank=True)
    run = models.ForeignKey(MaterializationRun, null=True, blank=True, on_delete=models.SET_NULL)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"materialization job {self.pk} of view {self.view_id}: {self.status}"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.BUSY, self.Status.FAILED)

    @property
    def percent(self) -> int | None:
        if self.status == self.Status.DONE:
            return 100
        if not self.rows_total:
            return None
        return min(100, round(100 * self.rows_read / self.rows_total))


class IngestJob(models.Model):
    """Progress of one batch ingest of one file into one view, so a rerun of the same file resumes after the last
    committed chunk instead of writing it twice."""

    view = models.ForeignKey(FeatureView, on_delete=models.CASCADE, related_name="ingests")
    file_name = models.CharField(max_length=500)
    file_sha256 = models.CharField(max_length=64)
    rows_done = models.PositiveBigIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["view", "file_sha256"], name="unique_ingest_per_file")]

    def __str__(self) -> str:
        return f"{self.file_name} -> {self.view_id} ({self.rows_done} rows)"
