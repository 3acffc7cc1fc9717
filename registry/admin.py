"""The admin console for data scientists: browse models and versions, register, promote and archive.

Every change goes through registry.services, so the admin writes exactly what the API would, events included.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme

from config.admin_forms import KeyValueField, LinesField
from registry import audit_admin, gates, services  # noqa: F401 - audit_admin registers its pages
from registry.models import (
    ArtifactFormat,
    ModelAlias,
    ModelGrant,
    ModelVersion,
    RegisteredModel,
    RegistryEvent,
    VersionStatus,
)

STATUS_COLOURS = {
    VersionStatus.REGISTERED: "#6c757d",
    VersionStatus.VALIDATED: "#0d6efd",
    VersionStatus.REJECTED: "#dc3545",
    VersionStatus.CANARY: "#fd7e14",
    VersionStatus.PRODUCTION: "#198754",
    VersionStatus.ARCHIVED: "#495057",
    VersionStatus.ROLLED_BACK: "#6f42c1",
}


def status_badge(version: ModelVersion) -> str:
    colour = STATUS_COLOURS.get(version.status, "#6c757d")
    badge = format_html(
        '<span style="background:{};color:#fff;padding:2px 8px;border-radius:8px">{}</span>',
        colour,
        version.status,
    )
    if version.integrity_failed_at:
        badge += format_html(' <span style="color:#dc3545;font-weight:bold">tampered</span>')
    return badge


class VersionColumns:
    """The columns a version shows in both the model page's inline and the version list."""

    @admin.display(description="status")
    def badge(self, version: ModelVersion) -> str:
        return status_badge(version)

    @admin.display(description="sha256")
    def short_sha(self, version: ModelVersion) -> str:
        return version.sha256[:12]


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class VersionInline(VersionColumns, ReadOnlyInline):
    model = ModelVersion
    fields = ["version", "badge", "format", "runtime", "short_sha", "created_by", "created_at"]
    readonly_fields = fields


class AliasInline(ReadOnlyInline):
    model = ModelAlias
    fields = ["name", "version", "updated_at"]
    readonly_fields = fields
    show_change_link = False


class EventInline(ReadOnlyInline):
    model = RegistryEvent
    fk_name = "model"
    fields = ["created_at", "action", "version", "actor_name", "message"]
    readonly_fields = fields
    show_change_link = False
    verbose_name_plural = "event history"


class RegisteredModelForm(forms.ModelForm):
    tags = KeyValueField(help_text="one per line: name = value, e.g. team = growth")
    gate_rules = LinesField(
        help_text="one rule per line, e.g. accuracy >= 0.9, or f1 >= production - 0.01 (relative to production)"
    )
    protected_aliases = LinesField(
        rows=2, help_text="one alias per line; moving one of these needs deploy permission on this model"
    )

    class Meta:
        model = RegisteredModel
        fields = ["name", "task", "description", "tags", "gate_rules", "protected_aliases", "convert_onnx"]

    def clean_gate_rules(self):
        rules = self.cleaned_data["gate_rules"]
        problems = gates.rule_problems(rules)
        if problems:
            raise forms.ValidationError(problems)
        return rules


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    form = RegisteredModelForm
    list_display = ["name", "task", "owner", "production_version", "version_count", "updated_at"]
    list_filter = ["task"]
    search_fields = ["name", "description"]
    list_select_related = ["owner"]
    inlines = [AliasInline, VersionInline, EventInline]
    # The "roll back production" action is added by rollouts/admin.py (the registry never imports the apps above it).

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return ["name", "task"] if obj else []

    @admin.display(description="production")
    def production_version(self, model: RegisteredModel) -> str:
        alias = model.aliases.filter(name=services.PRODUCTION_ALIAS).select_related("version").first()
        return f"v{alias.version.version}" if alias else "-"

    @admin.display(description="versions")
    def version_count(self, model: RegisteredModel) -> int:
        return model.versions.count()

    def save_model(self, request: HttpRequest, obj: RegisteredModel, form, change: bool) -> None:
        data = form.cleaned_data
        if change:
            services.registered_model_update(
                model=obj, actor=request.user, description=data["description"], tags=data["tags"],
                gate_rules=data["gate_rules"], protected_aliases=data["protected_aliases"],
                convert_onnx=data.get("convert_onnx", obj.convert_onnx),
            )  # fmt: skip
            return
        created = services.registered_model_create(
            name=data["name"], task=data["task"], description=data["description"], tags=data["tags"],
            gate_rules=data["gate_rules"], convert_onnx=data.get("convert_onnx", False), owner=request.user,
            actor=request.user,
        )  # fmt: skip
        if data["protected_aliases"] != created.protected_aliases:
            services.registered_model_update(
                model=created, actor=request.user, protected_aliases=data["protected_aliases"]
            )
        obj.pk = created.pk

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # history is kept: versions are archived, never deleted


class VersionRegistrationForm(forms.Form):
    model = forms.ModelChoiceField(queryset=RegisteredModel.objects.all())
    artifact = forms.FileField(help_text="a .skops file (or .onnx; .joblib only where pickle is trusted)")
    format = forms.ChoiceField(choices=[("", "detect from the file")] + ArtifactFormat.choices, required=False)
    evaluation_data = forms.FileField(required=False, help_text="CSV with the features and a target column")
    target_column = forms.CharField(initial="target")
    signature = forms.JSONField(required=False, help_text="leave empty to infer it from the model")
    metrics = KeyValueField(numbers=True, help_text="submitted metrics, one per line, e.g. accuracy = 0.95")
    lineage = KeyValueField(help_text="one per line, e.g. source = git:abc123")


REGISTER_INTRO = (
    "The artifact is checked (format, trust, signature, size), stored with its sha256, numbered and put through the "
    "model's quality gates. Nothing is stored when a check fails."
)


@admin.register(ModelVersion)
class ModelVersionAdmin(VersionColumns, admin.ModelAdmin):
    list_display = ["__str__", "badge", "format", "runtime", "short_sha", "size_bytes", "created_by", "created_at"]
    list_filter = ["status", "format", "model__task", "model"]
    search_fields = ["model__name", "sha256"]
    list_select_related = ["model", "created_by"]
    actions = ["archive", "promote_to_production"]
    readonly_fields = [
        "model", "version", "badge", "format", "sha256", "size_bytes", "artifact_path", "integrity_failed_at",
        "runtime", "runtime_override", "onnx_sha256", "onnx_size_bytes", "onnx_conversion", "gate_report_table",
        "signature_table", "metrics", "params", "tags", "lineage", "library_versions",
        "evaluation_data_path", "created_by", "created_at",
    ]  # fmt: skip
    fields = readonly_fields

    @admin.display(description="gate report")
    def gate_report_table(self, version: ModelVersion) -> str:
        report = version.gate_report or {}
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (r["rule"], "pass" if r["passed"] else "FAIL", r.get("actual"), r.get("reason", ""))
                for r in report.get("rules", [])
            ),
        )
        metrics = json.dumps(report.get("metrics", {}), indent=1, sort_keys=True)
        return format_html(
            "<p><b>{}</b> ({})</p><table><tr><th>rule</th><th>verdict</th><th>actual</th><th>reason</th></tr>{}"
            "</table><pre>{}</pre>",
            report.get("outcome", "-"),
            report.get("note", ""),
            rows,
            metrics,
        )

    @admin.display(description="signature")
    def signature_table(self, version: ModelVersion) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (f["name"], f["dtype"], "yes" if f.get("nullable") else "no", _constraints(f))
                for f in version.signature.get("inputs", [])
            ),
        )
        classes = version.signature.get("outputs", {}).get("classes")
        return format_html(
            "<table><tr><th>feature</th><th>dtype</th><th>nullable</th><th>constraints</th></tr>{}</table>"
            "<p>classes: {}</p>",
            rows,
            classes if classes is not None else "-",
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("registry.add_modelversion")

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_urls(self):
        register = self.admin_site.admin_view(self.register_view)
        return [
            path("register/", register, name="registry_modelversion_register"),
            *self.version_tool_urls(),
            *super().get_urls(),
        ]

    # --- The version page's buttons: re-run the gates, download the artifact (both through registry.services) ---

    def version_tool_urls(self) -> list:
        rerun = self.admin_site.admin_view(self.rerun_gates_view)
        download = self.admin_site.admin_view(self.download_artifact_view)
        return [
            path("<int:pk>/rerun-gates/", rerun, name="registry_modelversion_rerun_gates"),
            path("<int:pk>/artifact/", download, name="registry_modelversion_artifact"),
        ]

    def rerun_gates_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = get_object_or_404(ModelVersion.objects.select_related("model"), pk=pk)
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
            target = reverse("admin:registry_modelversion_change", args=[pk])
        back = HttpResponseRedirect(target)
        if request.method != "POST" or not self.has_change_permission(request, version):
            return back
        before = version.status
        try:
            version = services.model_version_rerun_gates(version=version, actor=request.user)
        except ValidationError as exc:
            self.message_user(request, f"{version}: {' '.join(exc.messages)}", messages.ERROR)
        else:
            failed = [r["rule"] for r in version.gate_report["rules"] if not r["passed"]]
            verdict = f"{before} → {version.status}" if before != version.status else f"still {version.status}"
            detail = f"; failed: {', '.join(failed)}" if failed else ""
            self.message_user(request, f"{version}: gates re-run against the current rules, {verdict}{detail}.")
        return back

    def download_artifact_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = get_object_or_404(ModelVersion.objects.select_related("model"), pk=pk)
        if not self.has_view_permission(request, version):
            return HttpResponseRedirect(reverse("admin:index"))
        try:
            data = services.model_version_read_artifact(version)  # sha256 checked first, as loading does
        except (services.ArtifactIntegrityError, FileNotFoundError) as exc:
            problem = str(exc) if isinstance(exc, services.ArtifactIntegrityError) else "the stored artifact is missing"
            self.message_user(request, f"{version}: not downloaded: {problem}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:registry_modelversion_change", args=[pk]))
        response = HttpResponse(data, content_type="application/octet-stream")
        filename = f"{version.model.name}-v{version.version}.{version.format}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["X-Content-SHA256"] = version.sha256
        return response

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:registry_modelversion_register"))

    def register_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = VersionRegistrationForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            evaluation = data["evaluation_data"]
            try:
                version = services.model_version_register(
                    model=data["model"],
                    artifact=data["artifact"].read(),
                    filename=data["artifact"].name,
                    fmt=data["format"] or None,
                    signature=data["signature"],
                    metrics=data["metrics"],
                    lineage=data["lineage"],
                    evaluation_data=evaluation.read() if evaluation else None,
                    target_column=data["target_column"],
                    actor=request.user,
                )
            except ValidationError as exc:
                for field, problems in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, problems)
            else:
                messages.success(request, f"Registered {version}: {version.status}.")
                return HttpResponseRedirect(reverse("admin:registry_modelversion_change", args=[version.pk]))
        context = {**self.admin_site.each_context(request), "title": "Register a model version", "form": form,
                   "opts": self.model._meta, "submit_label": "Register", "intro": REGISTER_INTRO}  # fmt: skip
        return TemplateResponse(request, "admin/form_page.html", context)

    @admin.action(description="Archive the selected versions")
    def archive(self, request: HttpRequest, queryset) -> None:
        for version in queryset:
            try:
                services.model_version_archive(version=version, actor=request.user)
            except ValidationError as exc:
                self.message_user(request, f"{version}: {' '.join(exc.messages)}", messages.ERROR)
            else:
                self.message_user(request, f"{version} archived.")

    @admin.action(description="Point the production alias at the selected version")
    def promote_to_production(self, request: HttpRequest, queryset) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one version to promote.", messages.ERROR)
            return
        version = queryset.get()
        try:
            services.alias_set(model=version.model, name=services.PRODUCTION_ALIAS, version=version, actor=request.user)
        except ValidationError as exc:
            self.message_user(request, f"{version}: {' '.join(exc.messages)}", messages.ERROR)
        else:
            self.message_user(request, f"{version} now serves production.")


def _constraints(feature: dict) -> str:
    parts = []
    if "min" in feature:
        parts.append(f"min {feature['min']}")
    if "max" in feature:
        parts.append(f"max {feature['max']}")
    if "allowed" in feature:
        parts.append(f"one of {', '.join(map(str, feature['allowed'][:10]))}")
    if feature.get("pii"):
        parts.append("pii")
    return "; ".join(parts)


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    list_display = ["model", "name", "version", "updated_at"]
    list_select_related = ["model", "version"]
    search_fields = ["model__name", "name"]
    readonly_fields = ["model", "name", "version", "updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # aliases move through the version list's promote action or the API, which record events

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(RegistryEvent)
class RegistryEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "model", "version", "action", "actor_name", "message"]
    list_filter = ["action", "model"]
    search_fields = ["model__name", "action", "actor_name", "message"]
    list_select_related = ["model", "version"]
    readonly_fields = [
        "created_at",
        "model",
        "version",
        "action",
        "actor",
        "actor_name",
        "before",
        "after",
        "message",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class ModelGrantForm(forms.ModelForm):
    class Meta:
        model = ModelGrant
        fields = ["model", "user", "group", "permission"]

    def clean(self):
        data = super().clean()
        if (data.get("user") is None) == (data.get("group") is None):
            raise forms.ValidationError("give the grant to a user or to a group (exactly one)")
        return data


@admin.register(ModelGrant)
class ModelGrantAdmin(admin.ModelAdmin):
    """Per-model permissions (registry/permissions.py): given and revoked, never edited; admins only."""

    form = ModelGrantForm
    list_display = ["model", "permission", "user", "group", "created_at"]
    list_filter = ["permission", "model"]
    search_fields = ["model__name", "user__username", "group__name"]
    list_select_related = ["model", "user", "group"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ModelGrant, form, change: bool) -> None:
        data = form.cleaned_data
        grant = services.model_grant_give(
            model=data["model"], permission=data["permission"], user=data["user"], group=data["group"],
            actor=request.user,
        )  # fmt: skip
        obj.pk = grant.pk

    def delete_model(self, request: HttpRequest, obj: ModelGrant) -> None:
        services.model_grant_revoke(grant=obj, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for grant in queryset:
            services.model_grant_revoke(grant=grant, actor=request.user)


from registry import admin_webhooks  # noqa: E402, F401  (webhook endpoints and deliveries, registered there)
