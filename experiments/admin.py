"""The experiments console: create, start, re-weight, stop and conclude; read allocation, SRM and per-arm results.

Every change goes through experiments.services, so the admin writes exactly what the API and the command would.
The results page is drawn on the server (tables and an inline SVG chart): no JavaScript, no CDN.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from config import charts
from experiments import parsing, selectors, services
from experiments.models import Experiment, ExperimentArm, ExperimentEvent
from experiments.stats import PEEKING_NOTE
from registry.models import RegisteredModel


class ExperimentCreateForm(forms.Form):
    name = forms.SlugField(max_length=100)
    model = forms.ModelChoiceField(queryset=RegisteredModel.objects.all())
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    arms = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), initial="control=1:50\ntreatment=2:50",
        help_text="one arm per line: NAME=VERSION:WEIGHT, VERSION being 2, models:/NAME/2 or models:/NAME@alias; "
        "the first line is the control",
    )  # fmt: skip
    primary_metric = forms.CharField(
        initial="conversion:purchase", help_text="conversion:EVENT, mean_value:EVENT or quality"
    )
    guardrails = forms.CharField(required=False, help_text="comma-separated metrics in the same form")
    minimum_sample_size = forms.IntegerField(min_value=1, initial=100, help_text="exposed keys per arm, at least")
    minimum_detectable_effect = forms.FloatField(initial=0.05, help_text="relative lift to detect (0.05 = 5%)")
    power = forms.FloatField(initial=0.8)
    alpha = forms.FloatField(initial=0.05)
    keyless_to_control = forms.BooleanField(required=False, initial=True, help_text="keyless requests go to control")
    start = forms.BooleanField(required=False, help_text="start right away")

    def clean_arms(self) -> list[dict[str, Any]]:
        try:
            return [parsing.arm(line) for line in self.cleaned_data["arms"].splitlines() if line.strip()]
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_primary_metric(self) -> dict[str, str]:
        return parsing.metric(self.cleaned_data["primary_metric"])

    def clean_guardrails(self) -> list[dict[str, str]]:
        return [parsing.metric(part) for part in self.cleaned_data["guardrails"].split(",") if part.strip()]


class ArmInline(admin.TabularInline):
    model = ExperimentArm
    fields = ["position", "name", "version", "weight", "ranges"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class EventInline(admin.TabularInline):
    model = ExperimentEvent
    fields = ["created_at", "action", "actor_name", "after", "message"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "history"

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _interval(ci: list[float | None]) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["name", "model", "status", "arm_summary", "srm_verdict", "started_at", "winner"]
    list_filter = ["status", "model"]
    search_fields = ["name", "model__name", "description"]
    list_select_related = ["model", "winner"]
    change_form_template = "admin/experiments/experiment/change_form.html"
    inlines = [ArmInline, EventInline]
    settings_fields = [
        "name", "model", "status", "description", "salt", "primary_metric", "guardrail_metrics",
        "minimum_sample_size", "minimum_detectable_effect", "power", "alpha", "keyless_to_control", "winner",
        "created_by", "created_at", "started_at", "stopped_at", "concluded_at", "allocation_changed_at",
    ]  # fmt: skip
    result_fields = ["srm_verdict", "results_period", "allocation_table", "primary_results", "metric_chart",
                     "progress", "guardrail_results"]  # fmt: skip
    readonly_fields = settings_fields + result_fields
    fieldsets = [("Results", {"fields": result_fields}), ("Experiment", {"fields": settings_fields})]

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).prefetch_related("arms__version")

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # changes go through the start/stop/weights/conclude buttons, which call the services

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # exposures and history stay for the record

    def get_object(self, request: HttpRequest, object_id: str, from_field=None):
        experiment = super().get_object(request, object_id, from_field)
        if experiment is not None:  # ?period=all on the results page, as on the API; anything else: the default
            asked = request.GET.get("period")
            experiment._period = asked if asked in selectors.PERIODS else selectors.SINCE_WEIGHT_CHANGE
        return experiment

    def _results(self, experiment: Experiment) -> dict[str, Any]:
        if not hasattr(experiment, "_results"):
            period = getattr(experiment, "_period", selectors.SINCE_WEIGHT_CHANGE)
            experiment._results = selectors.experiment_results(experiment, period)
        return experiment._results

    @admin.display(description="arms")
    def arm_summary(self, experiment: Experiment) -> str:
        return ", ".join(f"{arm.name} v{arm.version.version} ({arm.weight})" for arm in experiment.arms.all())

    @admin.display(description="sample ratio")
    def srm_verdict(self, experiment: Experiment) -> str:
        arms = list(experiment.arms.all())
        srm = selectors.allocation(experiment, arms)["srm"]
        if srm["mismatch"]:
            return format_html(
                '<b style="color:#dc3545">MISMATCH (p={}): the allocation is broken, do not trust the results</b>',
                f"{srm['p_value']:.2g}",
            )
        return format_html('<span style="color:#198754">ok (p={})</span>', f"{srm['p_value']:.3g}")

    @admin.display(description="period")
    def results_period(self, experiment: Experiment) -> str:
        period = self._results(experiment)["period"]
        here = reverse("admin:experiments_experiment_change", args=[experiment.pk])
        if period["mixed_allocations"]:
            return format_html(
                '<b style="color:#dc3545">{}</b> <a href="{}">Show the results since the last weight change</a>',
                period["note"], here,
            )  # fmt: skip
        if period["since"] is not None:
            return format_html('{} <a href="{}?period=all">Show all periods</a>', period["note"], here)
        return period["note"]

    @admin.display(description="allocation")
    def allocation_table(self, experiment: Experiment) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    a["name"],
                    a["version"],
                    a["weight"],
                    f"{a['expected_share']:.1%}",
                    a["exposed"],
                    a["exposed_since_allocation_change"],
                )
                for a in self._results(experiment)["allocation"]["arms"]
            ),  # fmt: skip
        )
        return format_html(
            "<table><tr><th>arm</th><th>version</th><th>weight</th><th>expected share</th><th>exposed keys</th>"
            "<th>exposed since the last weight change</th></tr>{}</table>",
            rows,
        )

    def _metric_table(self, block: dict[str, Any]) -> str:
        rows = []
        for row in block["arms"]:
            versus = row.get("vs_control") or {}
            verdict = ""
            if versus:
                verdict = "significant" if versus["significant"] else "not significant"
                if versus["significant"] and versus["better"] is not None:
                    verdict += ", better" if versus["better"] else ", worse"
            rows.append((
                row["arm"], row["n"], _pct(row["mean"]), _interval(row["ci"]),
                _pct(versus.get("absolute_lift")), _interval(versus.get("absolute_ci", [None, None])),
                _pct(versus.get("relative_lift")), _interval(versus.get("relative_ci", [None, None])),
                _pct(versus.get("p_value")), verdict,
            ))  # fmt: skip
        return format_html(
            "<p><b>{}</b>{}</p><table><tr><th>arm</th><th>n</th><th>mean</th><th>95% CI</th><th>lift</th>"
            "<th>lift CI</th><th>relative lift</th><th>relative CI</th><th>p-value</th><th></th></tr>{}</table>",
            block["label"],
            " (lower is better)" if block["lower_is_better"] else "",
            format_html_join("", "<tr>" + "<td>{}</td>" * 10 + "</tr>", rows),
        )

    @admin.display(description="primary metric")
    def primary_results(self, experiment: Experiment) -> str:
        return self._metric_table(self._results(experiment)["primary"])

    @admin.display(description="guardrails")
    def guardrail_results(self, experiment: Experiment) -> str:
        blocks = self._results(experiment)["guardrails"]
        return format_html_join("", "{}", ((self._metric_table(b),) for b in blocks)) if blocks else "-"

    @admin.display(description="over time")
    def metric_chart(self, experiment: Experiment) -> str:
        primary = self._results(experiment)["primary"]
        days = [datetime.combine(date.fromisoformat(d), time.min, tzinfo=UTC) for d in primary["series"]["days"]]
        return charts.line(
            {arm: zip(days, points, strict=True) for arm, points in primary["series"]["arms"].items()},
            y_label=primary["label"],
            title=f"{primary['label']}, cumulative per arm, by day of first exposure",
            empty="No exposures yet: the chart starts with the experiment's first exposed key.",
            per_day=True,
        )

    @admin.display(description="sample size")
    def progress(self, experiment: Experiment) -> str:
        sample = self._results(experiment)["sample_size"]
        if sample["required_for_mde"] is None:
            basis = "the control's baseline is not known yet, so the minimum sample size is the plan"
        else:
            basis = (f"{sample['required_for_mde']} per arm detect a {sample['mde']:.0%} relative lift with power "
                     f"{sample['power']} at alpha {sample['alpha']}")  # fmt: skip
        return format_html(
            "<p>smallest arm {} of {} planned per arm ({}): {}.</p><p><i>{}</i></p>",
            sample["smallest_arm"], sample["planned"], f"{sample['progress']:.0%}", basis, PEEKING_NOTE,
        )  # fmt: skip

    # --- Actions: each a POST to its own URL, through the services ------------------------------------------------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("create/", wrap(self.create_view), name="experiments_experiment_create"),
            path(
                "<int:pk>/act/<slug:action>/", wrap(require_POST(self.action_view)), name="experiments_experiment_act"
            ),
            *super().get_urls(),
        ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("experiments.add_experiment")

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:experiments_experiment_create"))

    def create_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = ExperimentCreateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = dict(form.cleaned_data)
            start = data.pop("start")
            data["guardrail_metrics"] = data.pop("guardrails")
            try:
                with transaction.atomic():  # created and started together, or neither
                    experiment = services.experiment_create(actor=request.user, **data)
                    if start:
                        services.experiment_start(experiment=experiment, actor=request.user)
            except ValidationError as exc:
                for field, problems in exc.message_dict.items():
                    target = "guardrails" if field == "guardrail_metrics" else field
                    form.add_error(target if target in form.fields else None, problems)
            else:
                messages.success(request, f"Created {experiment}{' and started it' if start else ''}.")
                return HttpResponseRedirect(reverse("admin:experiments_experiment_change", args=[experiment.pk]))
        context = {
            **self.admin_site.each_context(request), "title": "Create an experiment", "form": form,
            "opts": self.model._meta, "submit_label": "Create",
            "intro": "Arms split the model's production traffic by a stable hash of the salt and the request's routing "
            "key. Only validated versions can take part; a model has one running experiment or rollout at a time.",
        }  # fmt: skip
        return TemplateResponse(request, "admin/form_page.html", context)

    def action_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        experiment = get_object_or_404(Experiment, pk=pk)
        back = HttpResponseRedirect(reverse("admin:experiments_experiment_change", args=[pk]))
        if not request.user.has_perm("experiments.change_experiment"):
            messages.error(request, "You may not change experiments.")
            return back
        try:
            if action == "start":
                services.experiment_start(experiment=experiment, actor=request.user)
            elif action == "stop":
                services.experiment_stop(experiment=experiment, actor=request.user)
            elif action == "weights":
                weights = {arm.name: _int(request.POST.get(f"weight-{arm.name}")) for arm in experiment.arms.all()}
                services.experiment_set_weights(experiment=experiment, weights=weights, actor=request.user)
            elif action == "conclude":
                services.experiment_conclude(
                    experiment=experiment, winner=request.POST.get("winner", ""), actor=request.user,
                    message=request.POST.get("message", ""), promote=request.POST.get("promote", "direct"),
                )  # fmt: skip
            else:
                return HttpResponse(status=404)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"{experiment}: {action} done.")
        return back

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        experiment = self.get_object(request, object_id)
        extra = (
            {"experiment": experiment, "arms": list(experiment.arms.select_related("version"))} if experiment else {}
        )
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
