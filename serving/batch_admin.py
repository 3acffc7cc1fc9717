"""Batch jobs and schedules in the console: jobs listed with their progress, started from a model (the model page
links here with the model filled in), cancelled by an action; schedules edited here are what beat runs.
Every write goes through serving/batch.py, as the API's do."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from registry import permissions
from registry.models import RegisteredModel
from serving import batch
from serving.batch_models import BatchChunk, BatchJob, BatchSchedule, InputFormat


class BatchJobForm(forms.ModelForm):
    """Starting a job: the version is resolved and the locations checked by the service, here at clean time, so a
    refusal shows on its field."""

    model = forms.ModelChoiceField(queryset=RegisteredModel.objects.order_by("name"))
    version_ref = forms.CharField(required=False, label="Version",
                                  help_text="3 or models:/<name>@<alias>; empty: production")  # fmt: skip
    input_uri = forms.CharField(label="Input", help_text="a path, artifacts:..., s3://bucket/key or az://...")
    input_format = forms.ChoiceField(choices=[("", "from the name (default parquet)"), *InputFormat.choices],
                                     required=False)  # fmt: skip
    output_uri = forms.CharField(label="Output", help_text="a prefix for the parts, rejects.csv and _manifest.json")
    passthrough = forms.CharField(required=False, help_text="columns copied to the output, comma-separated (ids)")
    chunk_rows = forms.IntegerField(required=False, min_value=1)
    parallelism = forms.IntegerField(required=False, min_value=1)

    class Meta:
        model = BatchJob
        fields = ["model", "version_ref", "input_uri", "input_format", "output_uri", "passthrough", "chunk_rows",
                  "parallelism"]  # fmt: skip

    def __init__(self, *args, actor=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.actor = actor
        self.job: BatchJob | None = None

    def clean_passthrough(self) -> list[str]:
        return [c.strip() for c in (self.cleaned_data.get("passthrough") or "").split(",") if c.strip()]

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        fields = {"version": "version_ref", "input": "input_uri", "output": "output_uri"}
        try:
            permissions.check(self.actor, permissions.PREDICT, data["model"])
            self.job = batch.batch_job_create(
                model=data["model"], version_ref=data["version_ref"] or None, input_uri=data["input_uri"],
                input_format=data["input_format"] or None, output_uri=data["output_uri"],
                passthrough=data["passthrough"], chunk_rows=data["chunk_rows"], parallelism=data["parallelism"],
                actor=self.actor,
            )  # fmt: skip
        except ValidationError as exc:
            for field, problems in exc.message_dict.items():
                self.add_error(fields.get(field, field) if fields.get(field, field) in self.fields else None, problems)
        return data


class ChunkInline(admin.TabularInline):
    model = BatchChunk
    fields = ["index", "status", "rows", "rows_scored", "rows_rejected", "attempt", "claimed_by", "seconds", "part"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0
    show_change_link = False


@admin.register(BatchJob)
class BatchJobAdmin(admin.ModelAdmin):
    list_display = ["id", "model", "version_number", "status", "progress_text", "rows_rejected", "rate", "eta",
                    "created_at"]  # fmt: skip
    list_filter = ["status", "model"]
    list_select_related = ["model", "version"]
    search_fields = ["model__name", "input_uri", "output_uri"]
    actions = ["cancel"]
    inlines = [ChunkInline]

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        if obj is not None:
            return super().get_form(request, obj, change=change, **kwargs)
        form = BatchJobForm

        class WithActor(form):
            def __init__(self, *args, **kw) -> None:
                super().__init__(*args, actor=request.user, **kw)

        return WithActor

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        if obj is None:
            return []
        return ["model", "version", "version_ref", "input_uri", "input_format", "output_uri", "manifest_uri",
                "passthrough", "chunk_rows", "parallelism", "max_reject_share", "status", "error", "progress_text",
                "rate", "eta", "rows_rejected", "schedule", "created_by", "created_at", "started_at",
                "finished_at"]  # fmt: skip

    def get_fields(self, request: HttpRequest, obj=None):
        return self.get_readonly_fields(request, obj) if obj is not None else list(BatchJobForm.Meta.fields)

    def get_inlines(self, request: HttpRequest, obj=None):
        return [ChunkInline] if obj is not None else []

    def save_form(self, request: HttpRequest, form, change: bool):
        return form.job  # created by the service when the form was cleaned

    def save_model(self, request: HttpRequest, obj: BatchJob, form, change: bool) -> None:
        messages.success(request, f"Batch job {obj.pk} started: {obj.input_uri} -> {obj.output_uri}")

    def save_related(self, request, form, formsets, change) -> None:
        return None

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="version")
    def version_number(self, job: BatchJob) -> str:
        return f"v{job.version.version}"

    @admin.display(description="rows done / total")
    def progress_text(self, job: BatchJob) -> str:
        if job.rows_total is None:
            return "planning"
        share = job.rows_done / job.rows_total if job.rows_total else 1.0
        return f"{job.rows_done:,} / {job.rows_total:,} ({share:.0%}), chunks {job.chunks_done}/{job.chunks_total}"

    @admin.display(description="rows/s")
    def rate(self, job: BatchJob) -> str:
        return f"{job.progress()['rows_per_second']:,.0f}"

    @admin.display(description="ETA")
    def eta(self, job: BatchJob) -> str:
        seconds = job.progress()["eta_seconds"]
        return "" if seconds is None else f"{seconds:.0f} s"

    @admin.action(description="Cancel the selected jobs (chunks not started never run)")
    def cancel(self, request: HttpRequest, queryset) -> None:
        done = 0
        for job in queryset.select_related("model"):
            try:
                permissions.check(request.user, permissions.PREDICT, job.model)
                batch.batch_job_cancel(job=job, actor=request.user)
                done += 1
            except (ValidationError, permissions.PermissionRefused) as exc:
                self.message_user(request, f"job {job.pk}: {' '.join(exc.messages)}", messages.WARNING)
        if done:
            self.message_user(request, f"{done} job(s) cancelled.")


@admin.register(BatchSchedule)
class BatchScheduleAdmin(admin.ModelAdmin):
    list_display = ["name", "model", "cron", "input_pattern", "output_pattern", "enabled", "last_fired_at"]
    list_filter = ["enabled"]
    list_select_related = ["model"]
    readonly_fields = ["last_fired_at", "created_at"]

    def get_form(self, request: HttpRequest, obj=None, change: bool = False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        base_clean = form.clean

        def clean(self):
            data = base_clean(self)
            if problem := batch.cron_problem(data.get("cron") or ""):
                self.add_error("cron", problem)
            return data

        form.clean = clean
        return form
