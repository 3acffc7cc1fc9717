"""Serving in the admin console: API keys (the raw key shown once), serving policies, the prediction log."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connections
from django.http import HttpRequest
from django.utils.functional import cached_property

from config.admin_forms import DurationField, VocabularyField
from config.durations import format_duration
from registry import permissions
from registry.models import RegisteredModel
from registry.subjects import stored_key
from serving.keys import api_key_change, api_key_create, api_key_revoke, scope_problems
from serving.models import ApiKey, DeadLetter, PredictionLog, ServingPolicy
from serving.policies import serving_policy_delete, serving_policy_problems, serving_policy_set


def scope_vocabulary() -> list[tuple[str, str]]:
    """Every scope a key can hold, the per-model ones naming today's models."""
    general = [
        ("predict:*", "predict with every model"),
        ("registry:read", "read the registry and the management API"),
        ("registry:write", "register versions and change the registry"),
        ("deploy:*", "move protected aliases of every model"),
    ]
    names = RegisteredModel.objects.order_by("name").values_list("name", flat=True)
    per_model = [(f"{verb}:{name}", f"{verb} {name}") for name in names for verb in ("predict", "deploy")]
    return general + per_model


class ApiKeyForm(forms.ModelForm):
    scopes = VocabularyField(
        vocabulary=scope_vocabulary, help_text="what the key may do",
        error_messages={"required": "Tick at least one scope: a key without one can do nothing."},
    )  # fmt: skip

    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "rate_limit_per_second", "expires_at"]

    def clean_scopes(self):
        scopes = self.cleaned_data["scopes"]
        if problems := scope_problems(scopes):
            raise forms.ValidationError(problems)
        return scopes


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "prefix", "scopes", "rate_limit_per_second", "expires_at", "revoked_at", "created_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix"]
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return ["name", "prefix", "scopes", "created_by", "created_at", "revoked_at"] if obj else []

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if change:
            api_key_change(key=obj, actor=request.user)
            return
        data = form.cleaned_data
        key, raw = api_key_create(
            name=data["name"], scopes=data["scopes"], expires_at=data["expires_at"],
            rate_limit_per_second=data["rate_limit_per_second"], created_by=request.user,
        )  # fmt: skip
        obj.pk = key.pk
        messages.warning(
            request, f"The new key is {raw} — copy it now: it is stored hashed and will not be shown again."
        )

    @admin.action(description="Revoke the selected keys (takes effect at once)")
    def revoke(self, request: HttpRequest, queryset) -> None:
        for key in queryset:
            api_key_revoke(key=key, actor=request.user)
        self.message_user(request, f"Revoked {queryset.count()} keys.")

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # revoke instead, so the audit trail keeps the key's name


POLICY_FIELDS = [
    "deterministic", "cache_ttl_seconds", "inference_budget_ms", "breaker_consecutive_failures",
    "breaker_error_rate", "breaker_window_seconds", "breaker_min_requests", "breaker_cooldown_seconds",
]  # fmt: skip


class ServingPolicyForm(forms.ModelForm):
    """Saved through serving.policies.serving_policy_set, which checks every setting's range (and audits)."""

    cache_ttl_seconds = DurationField(label="cache TTL", help_text="how long a cached prediction is reused (e.g. 5m)")
    breaker_window_seconds = DurationField(label="breaker window", min_seconds=1)
    breaker_cooldown_seconds = DurationField(label="breaker cooldown", min_seconds=1, help_text="open this long "
                                             "before a probe")  # fmt: skip

    class Meta:
        model = ServingPolicy
        fields = ["model", *POLICY_FIELDS]

    def _post_clean(self) -> None:
        """After the model's own checks, the service's: the ranges it would refuse, in its words."""
        super()._post_clean()
        if not self.errors:
            problems = serving_policy_problems({name: self.cleaned_data[name] for name in POLICY_FIELDS})
            for field, messages_ in problems.items():
                self.add_error(field if field in self.fields else None, messages_)


@admin.register(ServingPolicy)
class ServingPolicyAdmin(admin.ModelAdmin):
    form = ServingPolicyForm
    list_display = ["model", "deterministic", "cache_ttl", "inference_budget_ms", "breaker_consecutive_failures"]
    list_select_related = ["model"]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return ["model"] if obj else []

    @admin.display(description="cache TTL")
    def cache_ttl(self, policy: ServingPolicy) -> str:
        return format_duration(policy.cache_ttl_seconds)

    def save_model(self, request: HttpRequest, obj: ServingPolicy, form, change: bool) -> None:
        data = form.cleaned_data
        saved = serving_policy_set(model=obj.model, actor=request.user, **{name: data[name] for name in POLICY_FIELDS})
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: ServingPolicy) -> None:
        serving_policy_delete(policy=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for policy in queryset:
            serving_policy_delete(policy=policy, actor=request.user)


class EstimatingPaginator(Paginator):
    """A paginator for a table too big to count: exact while the answer is small, the planner's estimate beyond.

    On Postgres, the unfiltered list counts at most EXACT_BELOW + 1 rows (a bounded count reads no more than that)
    and, when there are more, says the planner's row estimate (EXPLAIN, from pg_class.reltuples scaled to the
    table's size now). A filtered list asks the planner first and counts exactly only when it expects few rows. Other
    databases (SQLite in development) count exactly."""

    EXACT_BELOW = 10_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if connections[queryset.db].vendor != "postgresql":
            return super().count
        unordered = queryset.order_by()
        if not unordered.query.has_filters():
            counted = unordered[: self.EXACT_BELOW + 1].count()
            return counted if counted <= self.EXACT_BELOW else max(planner_rows(unordered), counted)
        estimate = planner_rows(unordered)
        return unordered.count() if estimate <= self.EXACT_BELOW else estimate


def planner_rows(queryset) -> int:
    """The planner's estimate of how many rows `queryset` returns (EXPLAIN, no execution)."""
    plan = json.loads(queryset.explain(format="json"))[0]["Plan"]
    if plan["Node Type"] == "Append":  # the partitioned log: the planner puts an empty day at one row, not none
        return int(sum(part["Plan Rows"] for part in plan["Plans"] if part["Plan Rows"] > 1))
    return int(plan["Plan Rows"])


class RegisteredModelNameFilter(admin.SimpleListFilter):
    """Filter the log by model; the choices are the registered models' names, never a DISTINCT over the log."""

    title = "model"
    parameter_name = "model_name"

    def lookups(self, request: HttpRequest, model_admin):
        return [(name, name) for name in RegisteredModel.objects.order_by("name").values_list("name", flat=True)]

    def queryset(self, request: HttpRequest, queryset):
        return queryset.filter(model_name=self.value()) if self.value() else queryset


class KeyedSearchMixin:
    """Search by the routing key people know: with MODELWORKS_HASH_ROUTING_KEYS the rows hold its keyed hash, so the
    term is also looked up as stored (registry/subjects.py)."""

    def get_search_results(self, request: HttpRequest, queryset, search_term: str):
        found, duplicates = super().get_search_results(request, queryset, search_term)
        hashed = stored_key(search_term.strip())
        if search_term.strip() and hashed != search_term.strip():
            more, more_duplicates = super().get_search_results(request, queryset, hashed)
            found, duplicates = found | more, duplicates or more_duplicates
        return found, duplicates


@admin.register(PredictionLog)
class PredictionLogAdmin(KeyedSearchMixin, admin.ModelAdmin):
    """The log grows by every request: nothing on this page scans it whole (no full COUNT, no DISTINCT, no date
    hierarchy — its year/month links are a DISTINCT over the log; the date filter's choices are fixed)."""

    list_display = ["created_at", "model_name", "version", "request_id", "caller", "latency_ms", "cached",
                    "route_reason", "outcome"]  # fmt: skip
    list_filter = [RegisteredModelNameFilter, "outcome", "cached", "created_at"]
    search_fields = ["=request_id", "=routing_key"]  # indexed; a caller search would scan the whole log
    paginator = EstimatingPaginator
    show_full_result_count = False
    readonly_fields = [f.name for f in PredictionLog._meta.fields]

    def get_fields(self, request: HttpRequest, obj=None):
        # Raw inputs are for those holding read_inputs (data scientists), not viewers (registry/permissions.py).
        fields = [f.name for f in PredictionLog._meta.fields if f.name != "id"]
        return (
            fields
            if permissions.holds(request.user, permissions.READ_INPUTS)
            else [name for name in fields if name != "inputs"]
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Rows the database refused, as they were buffered: read them, fix the cause, delete them when done."""

    list_display = ["created_at", "source", "error"]
    list_filter = ["source"]
    search_fields = ["error", "payload"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in DeadLetter._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


from serving import batch_admin  # noqa: E402,F401 - batch jobs and schedules register themselves
