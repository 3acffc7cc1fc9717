"""Feature store admin: define entities and views (through features/definitions.py, as apply_features does) and see
each view's freshness: newest event time, online row count, last materialization, and a sample of its values."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pandas as pd
from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from config.admin_forms import DurationField, FeatureListField, KeyValueField
from config.durations import format_duration
from features.definitions import definitions_apply
from features.historical import get_historical_features
from features.ingest import feature_file_ingest, file_sha256
from features.models import Entity, FeatureValue, FeatureView, IngestJob, MaterializationJob
from features.online import online_store
from features.retrieval import view_cache
from features.schema import EVENT_TIMESTAMP
from features.services import RowsRejected, materialization_request

SAMPLE_ROWS = 10
VIEW_FIELDS = ["name", "entity", "features", "ttl_seconds", "created_timestamp_column", "owner", "description", "tags"]


def _entity_spec(data: dict) -> dict:
    return {k: data.get(k) for k in ("name", "join_key", "value_type", "description")}


def _view_spec(data: dict) -> dict:
    entity = data.get("entity")
    return {
        "name": data.get("name"), "entity": entity.name if entity else None, "features": data.get("features"),
        "ttl": data.get("ttl_seconds"), "owner": data.get("owner"), "description": data.get("description"),
        "tags": data.get("tags") or {}, "created_timestamp_column": data.get("created_timestamp_column") or None,
    }  # fmt: skip


class _DefinitionForm(forms.ModelForm):
    """Checks the definition with a dry run of definitions_apply, so the admin refuses what apply_features would."""

    kind = "entities"

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        data = data | {"name": self.instance.name or data.get("name")}  # the name is read-only once created
        spec = _entity_spec(data) if self.kind == "entities" else _view_spec(data)
        try:
            definitions_apply(**{"entities": [], "views": [], self.kind: [spec]}, dry_run=True)
        except ValidationError as exc:
            raise forms.ValidationError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
        return data


class EntityForm(_DefinitionForm):
    class Meta:
        model = Entity
        fields = ["name", "join_key", "value_type", "description"]


class FeatureViewForm(_DefinitionForm):
    kind = "views"
    features = FeatureListField()
    ttl_seconds = DurationField(label="TTL", min_seconds=1, help_text="how long a value stays valid after its event "
                                "time, e.g. 30d, 12h or 90m")  # fmt: skip
    tags = KeyValueField(help_text="one per line: name = value, e.g. pii = true")
    created_timestamp_column = forms.CharField(
        required=False, max_length=63, help_text="the column of ingested/pushed rows giving each value's created time "
        "(left empty: created_timestamp, or none if a feature has that name); rows without it are created when "
        "written",
    )  # fmt: skip

    class Meta:
        model = FeatureView
        fields = VIEW_FIELDS


class IngestForm(forms.Form):
    file = forms.FileField(
        label="CSV or Parquet file", help_text="the entity's join key, event_timestamp and the features"
    )
    restart = forms.BooleanField(required=False, help_text="ingest this same file again from its first row")


def _feature_refs() -> list[tuple[str, str]]:
    return [
        (f"{view.name}:{name}", f"{view.name}:{name}")
        for view in FeatureView.objects.order_by("name")
        for name in view.feature_names
    ]


class TrainingDataForm(forms.Form):
    entities = forms.FileField(label="entity CSV", help_text="the join key(s) and a timestamp column, one row each")
    features = forms.MultipleChoiceField(choices=_feature_refs, widget=forms.CheckboxSelectMultiple)
    timestamp_column = forms.CharField(initial=EVENT_TIMESTAMP, max_length=100)
    as_of_created = forms.BooleanField(
        required=False, help_text="only values already written at each row's time (no late backfills)"
    )


def _one_line(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(problems)}" for field, problems in exc.message_dict.items())
    return " ".join(exc.messages)


@admin.register(Entity)
class EntityAdmin(admin.ModelAdmin):
    form = EntityForm
    list_display = ["name", "join_key", "value_type", "description"]
    search_fields = ["name", "join_key"]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return ["name"] if obj else []

    def save_model(self, request: HttpRequest, obj: Entity, form, change: bool) -> None:
        definitions_apply(entities=[_entity_spec(form.cleaned_data | {"name": obj.name})], views=[])
        obj.pk = Entity.objects.get(name=obj.name).pk


@admin.register(FeatureView)
class FeatureViewAdmin(admin.ModelAdmin):
    form = FeatureViewForm
    list_display = ["name", "entity", "feature_count", "ttl", "owner", "newest_event_at", "online_rows",
                    "last_materialization"]  # fmt: skip
    list_select_related = ["entity"]
    list_filter = ["entity"]
    search_fields = ["name", "owner", "description"]
    readonly_fields = ["newest_event_at", "materialized_until", "online_rows", "last_materialization", "ingests",
                       "sample"]  # fmt: skip

    change_form_template = "admin/features/featureview/change_form.html"
    change_list_template = "admin/features/featureview/change_list.html"

    @admin.display(description="TTL", ordering="ttl_seconds")
    def ttl(self, view: FeatureView) -> str:
        return format_duration(view.ttl_seconds)

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(last_materialized=Max("materializations__finished_at"))

    # --- Bulk work: ingest a file, materialize, build point-in-time training data (all through features' services)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/ingest/", wrap(self.ingest_view), name="features_featureview_ingest"),
            path("<int:pk>/materialize/", wrap(self.materialize_view), name="features_featureview_materialize"),
            path(
                "<int:pk>/materialize/<int:job>/",
                wrap(self.materialization_view),
                name="features_featureview_materialization",
            ),  # fmt: skip
            path("training-data/", wrap(self.training_data_view), name="features_featureview_training_data"),
            *super().get_urls(),
        ]

    def _page(self, request: HttpRequest, title: str, context: dict) -> TemplateResponse:
        context = {**self.admin_site.each_context(request), "title": title, "opts": self.model._meta, **context}
        return TemplateResponse(request, "admin/features/bulk.html", context)

    def ingest_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        view = get_object_or_404(FeatureView.objects.select_related("entity"), pk=pk)
        if not self.has_change_permission(request, view):
            return HttpResponseRedirect(reverse("admin:index"))
        form = IngestForm(request.POST or None, request.FILES or None)
        result: dict = {}
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            suffix = Path(upload.name).suffix.lower()
            with tempfile.TemporaryDirectory() as folder:
                # The ingest reads a file by path (in chunks, resumable by content hash): keep the upload's name.
                target = Path(folder) / Path(upload.name).name
                with target.open("wb") as handle:
                    for chunk in upload.chunks():
                        handle.write(chunk)
                sha = file_sha256(target) if suffix in (".csv", ".parquet") else ""
                try:
                    job = feature_file_ingest(view=view, path=target, restart=form.cleaned_data["restart"])
                except RowsRejected as exc:
                    job = IngestJob.objects.filter(view=view, file_sha256=sha).first()
                    result = {"rejected": exc.errors, "job": job}
                except ValidationError as exc:
                    form.add_error("file", _one_line(exc))
                else:
                    result = {"job": job}
        context = {"form": form, "view": view, "submit_label": "Ingest", "intro": INGEST_INTRO, **result}
        return self._page(request, f"Ingest a file into {view.name}", context)

    def materialize_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Queue an incremental materialization for a worker and follow it on its own page."""
        view = get_object_or_404(FeatureView.objects.select_related("entity"), pk=pk)
        back = HttpResponseRedirect(reverse("admin:features_featureview_change", args=[pk]))
        if request.method != "POST" or not self.has_change_permission(request, view):
            return back
        job = materialization_request(view=view, actor=request.user)
        return HttpResponseRedirect(reverse("admin:features_featureview_materialization", args=[pk, job.pk]))

    def materialization_view(self, request: HttpRequest, pk: int, job: int) -> HttpResponse:
        view = get_object_or_404(FeatureView, pk=pk)
        if not self.has_view_permission(request, view):
            return HttpResponseRedirect(reverse("admin:index"))
        found = get_object_or_404(MaterializationJob.objects.select_related("run"), pk=job, view=view)
        if found.status == MaterializationJob.Status.DONE:
            view_cache.clear()
        context = {**self.admin_site.each_context(request), "title": f"Materializing {view.name}",
                   "opts": self.model._meta, "view": view, "job": found,
                   "refresh_seconds": 2}  # fmt: skip
        return TemplateResponse(request, "admin/features/featureview/materialization.html", context)

    def training_data_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = TrainingDataForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                entities = pd.read_csv(io.BytesIO(data["entities"].read()))
            except (ValueError, UnicodeDecodeError) as exc:
                form.add_error("entities", f"not readable CSV: {exc}")
            else:
                try:
                    result = get_historical_features(entities, data["features"], as_of_created=data["as_of_created"],
                                                     timestamp_column=data["timestamp_column"])  # fmt: skip
                except ValidationError as exc:
                    form.add_error(None, _one_line(exc))
                else:
                    response = HttpResponse(result.to_csv(index=False), content_type="text/csv; charset=utf-8")
                    name = f"training-data-{timezone.now():%Y%m%d-%H%M%S}.csv"
                    response["Content-Disposition"] = f'attachment; filename="{name}"'
                    return response
        context = {"form": form, "submit_label": "Build and download", "intro": TRAINING_INTRO}
        return self._page(request, "Build point-in-time training data", context)

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return ["name", *self.readonly_fields] if obj else self.readonly_fields

    def get_fields(self, request: HttpRequest, obj=None):
        fields = list(VIEW_FIELDS)
        return fields + self.readonly_fields if obj else fields

    def save_model(self, request: HttpRequest, obj: FeatureView, form, change: bool) -> None:
        definitions_apply(entities=[], views=[_view_spec(form.cleaned_data | {"name": obj.name})])
        view_cache.clear()
        obj.pk = FeatureView.objects.get(name=obj.name).pk

    @admin.display(description="features")
    def feature_count(self, view: FeatureView) -> int:
        return len(view.features)

    @admin.display(description="online rows")
    def online_rows(self, view: FeatureView) -> int:
        return online_store().count(view)

    @admin.display(description="last materialization")
    def last_materialization(self, view: FeatureView):
        return (
            getattr(view, "last_materialized", None)
            or view.materializations.values_list("finished_at", flat=True).first()
        )

    @admin.display(description="file ingests")
    def ingests(self, view: FeatureView) -> str:
        jobs = view.ingests.order_by("-updated_at", "-id")[:SAMPLE_ROWS]
        if not jobs:
            return "none yet: use Ingest a file"
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            [(j.file_name, j.file_sha256[:12], j.rows_done,
              f"finished {timezone.localtime(j.finished_at):%Y-%m-%d %H:%M}" if j.finished_at else
              "stopped or running: upload the same file to resume") for j in jobs],
        )  # fmt: skip
        return format_html(
            "<table><thead><tr><th>file</th><th>sha256</th><th>rows stored</th><th>state</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description=f"newest {SAMPLE_ROWS} values written")
    def sample(self, view: FeatureView) -> str:
        rows = FeatureValue.objects.filter(view=view).order_by("-id")[:SAMPLE_ROWS]
        names = view.feature_names
        header = format_html_join("", "<th>{}</th>", [(n,) for n in ["entity", "event time", "created", *names]])
        body = format_html_join(
            "", "<tr>{}</tr>",
            [(format_html_join("", "<td>{}</td>", [(c,) for c in [r.entity_key, r.event_ts, r.created_ts,
                                                                    *[r.data.get(n) for n in names]]]),)
             for r in rows],
        )  # fmt: skip
        if not rows:
            return "no values yet"
        return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", header, body)


INGEST_INTRO = (
    "Rows are checked against the view's schema and stored in chunks of 10,000, each committed with the job's"
    " progress: a chunk with a bad row stops the ingest with its rows named, and the same file uploaded again resumes"
    " after the last stored chunk. The online store gets the values when the view is materialized."
)
TRAINING_INTRO = (
    "Each entity row gets, per view, the newest value with event time in [row time - TTL, row time]: what was known"
    " then, never later values. The answer is your CSV with one column per feature, as the historical_features"
    " command and POST /api/v1/features/historical/ build it."
)
