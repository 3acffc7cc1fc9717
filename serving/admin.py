"""Serving in the admin console: API keys (the raw key shown once), serving policies and the prediction log."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from serving.keys import api_key_create, api_key_revoke, scope_problems
from serving.models import ApiKey, PredictionLog, ServingPolicy


class ApiKeyForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "rate_limit_per_second", "expires_at"]
        help_texts = {"scopes": '["predict:my-model"], ["predict:*"], ["registry:read", "registry:write"]'}

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
            super().save_model(request, obj, form, change)
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
            api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} keys.")

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # revoke instead, so the audit trail keeps the key's name


@admin.register(ServingPolicy)
class ServingPolicyAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "deterministic",
        "cache_ttl_seconds",
        "inference_budget_ms",
        "breaker_consecutive_failures",
    ]
    list_select_related = ["model"]
    raw_id_fields = ["model"]


@admin.register(PredictionLog)
class PredictionLogAdmin(admin.ModelAdmin):
    list_display = ["created_at", "model_name", "version", "request_id", "latency_ms", "cached", "route_reason"]
    list_filter = ["model_name", "cached", "route_reason"]
    search_fields = ["request_id", "routing_key"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in PredictionLog._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
