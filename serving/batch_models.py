"""Batch scoring's data: a job over files, its chunks (the unit a worker claims), and schedules that start jobs.

Imported by serving/models.py, so Django sees these as serving's models.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from registry.models import ModelVersion, RegisteredModel


class JobStatus(models.TextChoices):
    PENDING = "pending", "waiting to be planned"
    RUNNING = "running", "chunks being scored"
    SUCCEEDED = "succeeded", "every chunk scored and the manifest written"
    FAILED = "failed", "stopped: unreadable input, too many rejects or a failed chunk"
    CANCELLED = "cancelled", "stopped on request"

    @classmethod
    def finished(cls) -> tuple[str, ...]:
        return (cls.SUCCEEDED, cls.FAILED, cls.CANCELLED)


class ChunkStatus(models.TextChoices):
    PENDING = "pending", "not claimed yet"
    RUNNING = "running", "claimed by a worker (until its lease ends)"
    DONE = "done", "its part is written and counted"
    CANCELLED = "cancelled", "never run: the job stopped first"


class InputFormat(models.TextChoices):
    PARQUET = "parquet", "Parquet"
    CSV = "csv", "CSV (with a header line)"


class BatchSchedule(models.Model):
    """A job definition that beat starts on a cron schedule (UTC) over a dated input path.

    `input_pattern` and `output_pattern` are strftime patterns filled with the scheduled time, e.g.
    s3://lake/scoring/%Y-%m-%d/ -> s3://lake/scoring/2026-12-04/.
    """

    name = models.SlugField(max_length=100, unique=True)
    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="batch_schedules")
    version_ref = models.CharField(
        max_length=200, blank=True, help_text="a version number or models:/<name>@<alias>; empty: production"
    )
    input_pattern = models.CharField(max_length=1000)
    input_format = models.CharField(max_length=10, choices=InputFormat.choices, default=InputFormat.PARQUET)
    output_pattern = models.CharField(max_length=1000)
    passthrough = models.JSONField(default=list, blank=True, help_text="columns copied to the output (ids)")
    cron = models.CharField(max_length=100, help_text="minute hour day-of-month month day-of-week, in UTC")
    enabled = models.BooleanField(default=True)
    last_fired_at = models.DateTimeField(null=True, blank=True, help_text="the scheduled time of the last job")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"batch schedule {self.name}"


class BatchJob(models.Model):
    """Score every row of the input with one version (resolved once, at creation) into Parquet parts + a manifest."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="batch_jobs")
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="batch_jobs")
    version_ref = models.CharField(max_length=200, blank=True, help_text="what was asked for: a version or alias")
    input_uri = models.CharField(max_length=1000)
    input_format = models.CharField(max_length=10, choices=InputFormat.choices)
    output_uri = models.CharField(max_length=1000)
    passthrough = models.JSONField(default=list, blank=True)
    chunk_rows = models.PositiveIntegerField()
    parallelism = models.PositiveIntegerField(help_text="how many chunks may run at once")
    max_reject_share = models.FloatField(help_text="the job fails once more than this share of rows is rejected")
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True)
    error = models.TextField(blank=True)
    rows_total = models.BigIntegerField(null=True, blank=True)
    rows_done = models.BigIntegerField(default=0, help_text="rows read by finished chunks, rejects included")
    rows_rejected = models.BigIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    schedule = models.ForeignKey(BatchSchedule, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"batch job {self.pk}"

    @property
    def manifest_uri(self) -> str:
        return self.output_uri.rstrip("/") + "/_manifest.json"

    def progress(self) -> dict[str, float | int | None]:
        """Rows done and total, rows/s since the first chunk was claimed, and the seconds left at that rate."""
        end = self.finished_at or timezone.now()
        elapsed = (end - self.started_at).total_seconds() if self.started_at else 0.0
        rate = self.rows_done / elapsed if elapsed > 0 else 0.0
        left = (self.rows_total or 0) - self.rows_done
        eta = None if self.status in JobStatus.finished() or rate <= 0 or self.rows_total is None else left / rate
        return {"rows_done": self.rows_done, "rows_total": self.rows_total, "rows_rejected": self.rows_rejected,
                "chunks_done": self.chunks_done, "chunks_total": self.chunks_total,
                "rows_per_second": round(rate, 1), "eta_seconds": None if eta is None else round(eta, 1),
                "elapsed_seconds": round(elapsed, 3)}  # fmt: skip


class BatchChunk(models.Model):
    """One slice of the input (row groups of a Parquet file, a byte range of a CSV file) and its one output part.

    A worker claims a chunk (SELECT ... FOR UPDATE SKIP LOCKED) with a lease as long as the chunk task's time limit:
    a chunk still RUNNING after its lease is one whose worker died, and is claimed again. `attempt` rises with each
    claim; only the current attempt may commit the chunk, so a slow worker that lost its lease counts nothing twice.
    """

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    source = models.JSONField(help_text="file, format, row groups or byte range, first row number")
    rows = models.PositiveIntegerField(help_text="the rows this chunk reads")
    status = models.CharField(max_length=10, choices=ChunkStatus.choices, default=ChunkStatus.PENDING)
    attempt = models.PositiveIntegerField(default=0)
    claimed_by = models.CharField(max_length=200, blank=True, help_text="host:pid of the last claim")
    lease_until = models.DateTimeField(null=True, blank=True)
    rows_scored = models.PositiveIntegerField(default=0)
    rows_rejected = models.PositiveIntegerField(default=0)
    part = models.CharField(max_length=1000, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="batchchunk_one_per_index")]
        indexes = [models.Index(fields=["job", "status"], name="batchchunk_job_status")]

    def __str__(self) -> str:
        return f"chunk {self.index} of job {self.job_id}"
