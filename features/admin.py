"""Feature store admin: define entities and views (through features/definitions.py, as apply_features does) and see
each view's freshness: newest event time, online row count, last materialization, and a sample of its values."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Max
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from features.definitions import definitions_apply
from features.models import Entity, FeatureValue, FeatureView
from features.online import online_store
from features.retrieval import view_cache

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
    created_timestamp_column = forms.CharField(
        required=False, max_length=63, help_text="the column of ingested/pushed rows giving each value's created time "
        "(left empty: created_timestamp, or none if a feature has that name); rows without it are created when "
        "written",
    )  # fmt: skip

    class Meta:
        model = FeatureView
        fields = VIEW_FIELDS
        help_texts = {"features": 'a list like [{"name": "mean_radius", "dtype": "float"}] (float, int, bool, string)'}


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
    list_display = ["name", "entity", "feature_count", "ttl_seconds", "owner", "newest_event_at", "online_rows",
                    "last_materialization"]  # fmt: skip
    list_select_related = ["entity"]
    list_filter = ["entity"]
    search_fields = ["name", "owner", "description"]
    readonly_fields = ["newest_event_at", "materialized_until", "online_rows", "last_materialization", "sample"]

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(last_materialized=Max("materializations__finished_at"))

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
