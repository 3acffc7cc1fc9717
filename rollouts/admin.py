"""Rollouts in the admin console: start one, watch its stages and figures, steer it through the same services.

The page says what is true now: an active rollout shows its live split and the controls its state allows (pause while
pending or running, resume while paused, promote and abort while active); a finished one shows how it ended and the
traffic each stage took against that stage's own target.
"""

from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from config.admin_forms import NumbersByNameField, add_service_errors
from registry.models import ModelVersion, RegisteredModel, VersionStatus
from rollouts import analysis as rollout_analysis
from rollouts import selectors, services
from rollouts.models import ACTIVE_ROLLOUT_STATUSES, Rollout, RolloutStatus

ROLLOUT_COLOURS = {
    RolloutStatus.PENDING: "#6c757d",
    RolloutStatus.RUNNING: "#0d6efd",
    RolloutStatus.PAUSED: "#fd7e14",
    RolloutStatus.PROMOTED: "#198754",
    RolloutStatus.ROLLED_BACK: "#dc3545",
    RolloutStatus.ABORTED: "#6f42c1",
}
# action -> (service, button label, the statuses it is offered in): the services refuse the others anyway.
CONTROLS = {
    "pause": (services.rollout_pause, "Pause", (RolloutStatus.PENDING, RolloutStatus.RUNNING)),
    "resume": (services.rollout_resume, "Resume", (RolloutStatus.PAUSED,)),
    "promote": (services.rollout_promote, "Promote now", (RolloutStatus.PENDING, RolloutStatus.RUNNING,
                                                          RolloutStatus.PAUSED)),
    "abort": (services.rollout_abort, "Abort (roll back)", (RolloutStatus.PENDING, RolloutStatus.RUNNING,
                                                            RolloutStatus.PAUSED)),
}  # fmt: skip


def controls_for(rollout: Rollout) -> list[tuple[str, str]]:
    """(action, label) of each control the rollout's state allows."""
    return [(action, label) for action, (_, label, allowed) in CONTROLS.items() if rollout.status in allowed]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


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


def split_now(rollout: Rollout) -> str:
    """Who takes the model's traffic now, in words: the live split while active, how it ended once finished."""
    baseline, candidate = f"v{rollout.baseline.version}", f"v{rollout.candidate.version}"
    if rollout.status == RolloutStatus.PROMOTED:
        return f"finished: {candidate} became production"
    if not rollout.active:
        ended = rollout.status.replace("_", " ")
        return f"finished ({ended}): {baseline} kept production, {candidate} no longer takes its traffic"
    mirrored = f", {rollout.shadow_percent:g}% mirrored to {candidate}" if rollout.shadow_percent else ""
    if rollout.status == RolloutStatus.PENDING:
        return f"pending: 100% {baseline} until the first stage starts{mirrored}"
    held = " (held while paused)" if rollout.status == RolloutStatus.PAUSED else ""
    return (f"{100 - rollout.candidate_percent:g}% {baseline} / {rollout.candidate_percent:g}% {candidate}"
            f"{mirrored}{held}")  # fmt: skip


class CandidateChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, version: ModelVersion) -> str:
        return f"{version.model.name} v{version.version}"


class RolloutStartForm(forms.Form):
    candidate = CandidateChoiceField(
        queryset=ModelVersion.objects.filter(status=VersionStatus.VALIDATED)
        .select_related("model")
        .order_by("model__name", "-version"),
        help_text="a validated version; it takes its model's production traffic",
    )
    mode = forms.ChoiceField(choices=Rollout.Mode.choices, initial=Rollout.Mode.CANARY)
    stages = forms.CharField(initial="10,25,50,100", help_text="candidate percent per stage")
    stage_seconds = forms.IntegerField(min_value=1, initial=300)
    shadow_percent = forms.FloatField(min_value=0, max_value=100, initial=0, help_text="requests mirrored")
    analysis = NumbersByNameField(
        list(rollout_analysis.DEFAULTS), placeholders=rollout_analysis.DEFAULTS,
        help_text="thresholds the stages are judged by; empty boxes keep the default shown",
    )  # fmt: skip

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
    change_form_template = "admin/rollouts/rollout/change_form.html"
    fields = readonly_fields = [
        "model", "candidate", "baseline", "mode", "badge", "progress", "split", "reason", "stage_seconds",
        "stage_started_at", "stage_extensions", "analysis", "arm_figures", "stage_shares", "shadow", "timeline",
        "created_by", "created_at", "finished_at",
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

    @admin.display(description="traffic")
    def split(self, rollout: Rollout) -> str:
        return split_now(rollout)

    @admin.display(description="per-arm figures")
    def arm_figures(self, rollout: Rollout) -> str:
        live = selectors.live_figures(rollout)
        rows = []
        for arm in ("baseline", "candidate"):
            f = live[arm]
            rate = "-" if f["error_rate"] is None else f"{f['error_rate']:.2%}"
            p99 = "-" if f["p99_ms"] is None else f"{f['p99_ms']:.1f} ms"
            rows.append((arm, f["requests"], f["errors"], rate, p99))
        if rollout.active:
            target = live["target_candidate_percent"]
            share = format_html(
                "<p>this stage: candidate share observed {} (target {}%)</p>",
                _percent(live["observed_candidate_percent"]),
                f"{target:g}",
            )
        else:
            share = mark_safe("<p>whole rollout, every stage together: the shares per stage are below</p>")  # noqa: S308
        return format_html(
            "<table><tr><th>arm</th><th>requests</th><th>errors</th><th>error rate</th><th>p99</th></tr>{}</table>{}",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
            share,
        )

    @admin.display(description="candidate share per stage")
    def stage_shares(self, rollout: Rollout) -> str:
        stages = selectors.stage_figures(rollout)
        if rollout.mode != Rollout.Mode.CANARY:
            return "shadow only: the candidate takes no live traffic"
        if not stages:
            return "no stage started yet"
        rows = [
            (f"stage {s['stage']}" + (" (now)" if s["current"] else ""), f"{s['target_candidate_percent']:g}%",
             _percent(s["observed_candidate_percent"]), s["baseline_requests"], s["candidate_requests"])
            for s in stages
        ]  # fmt: skip
        return format_html(
            "<table><tr><th>stage</th><th>target</th><th>observed</th><th>baseline requests</th>"
            "<th>candidate requests</th></tr>{}</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @admin.display(description="shadow traffic")
    def shadow(self, rollout: Rollout) -> str:
        if not rollout.shadow_percent:
            return "-"
        c = selectors.shadow_comparison(rollout)
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

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        rollout = self.get_object(request, object_id)
        controls = controls_for(rollout) if rollout is not None and self.has_add_permission(request) else []
        active = rollout is not None and rollout.status in ACTIVE_ROLLOUT_STATUSES
        live = settings.MODELWORKS_CONSOLE_REFRESH_S if active else None  # a finished rollout's page stays still
        extra = {**(extra_context or {}), "controls": controls, "live_seconds": live}
        return super().change_view(request, object_id, form_url, extra)

    def get_urls(self):
        start = self.admin_site.admin_view(self.start_view)
        control = self.admin_site.admin_view(self.control_view)
        return [
            path("start/", start, name="rollouts_rollout_start"),
            path("<int:pk>/control/<str:action>/", control, name="rollouts_rollout_control"),
            *super().get_urls(),
        ]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:rollouts_rollout_start"))

    def start_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = RolloutStartForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            candidate = data["candidate"]
            try:
                rollout = services.rollout_start(
                    model=candidate.model, candidate=candidate, mode=data["mode"], stages=data["stages"],
                    stage_seconds=data["stage_seconds"], shadow_percent=data["shadow_percent"],
                    analysis=data["analysis"] or None, actor=request.user,
                )  # fmt: skip
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(request, f"Started {rollout}.")
                return HttpResponseRedirect(reverse("admin:rollouts_rollout_change", args=[rollout.pk]))
        context = {**self.admin_site.each_context(request), "title": "Start a rollout", "form": form,
                   "opts": self.model._meta, "submit_label": "Start", "intro": START_INTRO}  # fmt: skip
        return TemplateResponse(request, "admin/form_page.html", context)

    def control_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        back = HttpResponseRedirect(reverse("admin:rollouts_rollout_change", args=[pk]))
        if request.method != "POST" or action not in CONTROLS or not self.has_add_permission(request):
            return back
        try:
            CONTROLS[action][0](rollout=Rollout.objects.get(pk=pk), actor=request.user)
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


@admin.action(description="Roll back production to the previous version (or abort the active rollout)")
def roll_back_production(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset) -> None:
    for model in queryset:
        try:
            taken_out, serving_now = services.model_rollback(model=model, actor=request.user)
        except ValidationError as exc:
            modeladmin.message_user(request, f"{model.name}: {' '.join(exc.messages)}", messages.ERROR)
        else:
            modeladmin.message_user(request, f"{model.name}: v{serving_now.version} serves production again, "
                                             f"v{taken_out.version} is rolled back.")  # fmt: skip


# The registry's model admin gets the rollback action from here: the registry never imports the apps above it.
# (Admin modules load in INSTALLED_APPS order, so registry's admin is registered by now.)
_models_admin = admin.site.get_model_admin(RegisteredModel)
_models_admin.actions = [*(_models_admin.actions or []), roll_back_production]
