"""Serving in the admin console: API keys (the raw key shown once), serving policies, the prediction log, rollouts."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from registry.models import ModelVersion, RegisteredModel
from serving import rollout_selectors, rollouts
from serving.keys import api_key_create, api_key_revoke, scope_problems
from serving.models import ApiKey, DeadLetter, PredictionLog, Rollout, RolloutStatus, ServingPolicy


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
    list_display = ["created_at", "model_name", "version", "request_id", "latency_ms", "cached", "route_reason",
                    "outcome"]  # fmt: skip
    list_filter = ["model_name", "cached", "outcome"]
    search_fields = ["request_id", "routing_key"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in PredictionLog._meta.fields]

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


# --- Rollouts ------------------------------------------------------------------------------------------------------

ROLLOUT_COLOURS = {
    RolloutStatus.PENDING: "#6c757d",
    RolloutStatus.RUNNING: "#0d6efd",
    RolloutStatus.PAUSED: "#fd7e14",
    RolloutStatus.PROMOTED: "#198754",
    RolloutStatus.ROLLED_BACK: "#dc3545",
    RolloutStatus.ABORTED: "#6f42c1",
}
CONTROLS = {
    "pause": rollouts.rollout_pause,
    "resume": rollouts.rollout_resume,
    "promote": rollouts.rollout_promote,
    "abort": rollouts.rollout_abort,
}


def stage_bar(rollout: Rollout) -> str:
    """One cell per stage: done green, current blue (or its final colour), later grey, labelled with its percent."""
    cells = []
    for index, percent in enumerate(rollout.stages):
        if rollout.status == RolloutStatus.PROMOTED or index < rollout.stage_index:
            colour = "#198754"
        elif index == rollout.stage_index and rollout.stage_started_at is not None:
            colour = ROLLOUT_COLOURS[rollout.status]
        else:
            colour = "#dee2e6"
        cells.append((colour, percent))
    return format_html(
        '<div style="display:flex;gap:2px;min-width:240px">{}</div>',
        format_html_join(
            "",
            '<div style="flex:1;background:{};color:#fff;text-align:center;padding:2px 0;font-size:11px">{}%</div>',
            cells,
        ),
    )


class RolloutStartForm(forms.Form):
    model = forms.ModelChoiceField(queryset=RegisteredModel.objects.all())
    version = forms.IntegerField(min_value=1, help_text="the candidate: a validated version of that model")
    mode = forms.ChoiceField(choices=Rollout.Mode.choices, initial=Rollout.Mode.CANARY)
    stages = forms.CharField(initial="10,25,50,100", help_text="candidate percent per stage")
    stage_seconds = forms.IntegerField(min_value=1, initial=300)
    shadow_percent = forms.FloatField(min_value=0, max_value=100, initial=0, help_text="requests mirrored")

    def clean_stages(self) -> list[int]:
        try:
            return [int(part) for part in self.cleaned_data["stages"].split(",")]
        except ValueError:
            raise forms.ValidationError("percentages separated by commas, e.g. 10,25,50,100") from None


@admin.register(Rollout)
class RolloutAdmin(admin.ModelAdmin):
    list_display = ["__str__", "model", "badge", "progress", "split", "created_at"]
    list_filter = ["status", "mode", "model"]
    list_select_related = ["model", "candidate", "baseline"]
    change_form_template = "admin/serving/rollout/change_form.html"
    fields = readonly_fields = [
        "model", "candidate", "baseline", "mode", "badge", "progress", "split", "reason", "stage_seconds",
        "stage_started_at", "stage_extensions", "analysis", "arm_figures", "shadow", "timeline", "created_by",
        "created_at", "finished_at",
    ]  # fmt: skip

    @admin.display(description="status")
    def badge(self, rollout: Rollout) -> str:
        return format_html(
            '<span style="background:{};color:#fff;padding:2px 8px;border-radius:8px">{}</span>',
            ROLLOUT_COLOURS[rollout.status],
            rollout.status,
        )

    @admin.display(description="stages")
    def progress(self, rollout: Rollout) -> str:
        return stage_bar(rollout) if rollout.mode == Rollout.Mode.CANARY else "shadow only"

    @admin.display(description="split now")
    def split(self, rollout: Rollout) -> str:
        mirrored = f", {rollout.shadow_percent:g}% mirrored" if rollout.shadow_percent else ""
        return f"{100 - rollout.candidate_percent:g}% v{rollout.baseline.version} / " \
               f"{rollout.candidate_percent:g}% v{rollout.candidate.version}{mirrored}"  # fmt: skip

    @admin.display(description="per-arm figures (this stage)")
    def arm_figures(self, rollout: Rollout) -> str:
        live = rollout_selectors.live_figures(rollout)
        rows = []
        for arm in ("baseline", "candidate"):
            f = live[arm]
            rate = "-" if f["error_rate"] is None else f"{f['error_rate']:.2%}"
            p99 = "-" if f["p99_ms"] is None else f"{f['p99_ms']:.1f} ms"
            rows.append((arm, f["requests"], f["errors"], rate, p99))
        observed = live["observed_candidate_percent"]
        return format_html(
            "<table><tr><th>arm</th><th>requests</th><th>errors</th><th>error rate</th><th>p99</th></tr>{}</table>"
            "<p>candidate share observed {} (target {}%)</p>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
            "-" if observed is None else f"{observed:.1f}%",
            f"{live['target_candidate_percent']:g}",
        )

    @admin.display(description="shadow traffic")
    def shadow(self, rollout: Rollout) -> str:
        if not rollout.shadow_percent:
            return "-"
        c = rollout_selectors.shadow_comparison(rollout)
        if not c["pairs"]:
            return "no mirrored requests yet"
        return format_html(
            "{} mirrored requests; agreement with production {}; median latency {} ms production (whole request) "
            "vs {} ms shadow (model call); {} shadow errors",
            c["pairs"], f"{c['agreement']:.1%}", f"{c['baseline_p50_ms']:.2f}", f"{c['candidate_p50_ms']:.2f}",
            c["shadow_errors"],
        )  # fmt: skip

    @admin.display(description="event timeline")
    def timeline(self, rollout: Rollout) -> str:
        rows = [
            (e.created_at.strftime("%Y-%m-%d %H:%M:%S"), e.action,
             "" if e.stage_index is None else e.stage_index + 1, e.actor_name, e.message,
             json.dumps(e.figures, indent=1, default=str) if e.figures else "")
            for e in rollout.events.all()
        ]  # fmt: skip
        return format_html(
            "<table><tr><th>time</th><th>event</th><th>stage</th><th>by</th><th>message</th><th>figures</th></tr>"
            "{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                "<td><details><summary>figures</summary><pre>{}</pre></details></td></tr>",
                rows,
            ),
        )

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # a rollout changes only through its controls, which go through the services

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_urls(self):
        start = self.admin_site.admin_view(self.start_view)
        control = self.admin_site.admin_view(self.control_view)
        return [
            path("start/", start, name="serving_rollout_start"),
            path("<int:pk>/control/<str:action>/", control, name="serving_rollout_control"),
            *super().get_urls(),
        ]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:serving_rollout_start"))

    def start_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = RolloutStartForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                candidate = ModelVersion.objects.filter(model=data["model"], version=data["version"]).first()
                if candidate is None:
                    raise ValidationError({"version": [f"{data['model'].name} has no version {data['version']}"]})
                rollout = rollouts.rollout_start(
                    model=data["model"], candidate=candidate, mode=data["mode"], stages=data["stages"],
                    stage_seconds=data["stage_seconds"], shadow_percent=data["shadow_percent"], actor=request.user,
                )  # fmt: skip
            except ValidationError as exc:
                for field, problems in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, problems)
            else:
                messages.success(request, f"Started {rollout}.")
                return HttpResponseRedirect(reverse("admin:serving_rollout_change", args=[rollout.pk]))
        context = {**self.admin_site.each_context(request), "title": "Start a rollout", "form": form,
                   "opts": self.model._meta, "submit_label": "Start", "intro": START_INTRO}  # fmt: skip
        return TemplateResponse(request, "admin/form_page.html", context)

    def control_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        back = HttpResponseRedirect(reverse("admin:serving_rollout_change", args=[pk]))
        if request.method != "POST" or action not in CONTROLS or not self.has_add_permission(request):
            return back
        try:
            CONTROLS[action](rollout=Rollout.objects.get(pk=pk), actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"Rollout {pk}: {action} done.")
        return back


START_INTRO = (
    "The candidate takes the stages' share of production traffic in turn; after each stage it is compared with "
    "production (errors, p99 latency, output drift, quality where feedback arrived). Healthy at the last stage: it "
    "becomes production. Unhealthy at any stage: its traffic drops to 0 and it is marked rolled back."
)
