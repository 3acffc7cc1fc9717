"""Monitoring in the admin: per model the latest drift report (table and histograms), drift and quality over time,
open alerts; monitors can be run from here. Charts are drawn by the console's vendored Chart.js (config/charts.py):
nothing from a CDN."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from config import charts
from monitoring.models import Alert, BusinessEvent, DriftReport, Feedback, Monitor, ReferenceDataset
from monitoring.quality import CLASSIFICATION_METRICS, REGRESSION_METRICS
from monitoring.selectors import business_impact
from monitoring.services.monitors import monitor_run
from registry.models import RegisteredModel, Task

HISTORY = 60
IMPACT_DAYS = 30


def model_dashboard_context(model: RegisteredModel) -> dict:
    reports = list(DriftReport.objects.filter(model_name=model.name).order_by("-created_at", "-id")[:HISTORY])
    latest = next((r for r in reports if r.tested_features), reports[0] if reports else None)
    history = list(reversed(reports))
    metrics = REGRESSION_METRICS if model.task == Task.REGRESSION else CLASSIFICATION_METRICS
    quality = {
        name: [(r.created_at, r.quality[name]) for r in history if r.quality.get(name) is not None] for name in metrics
    }
    features = []
    if latest is not None:
        for feature in latest.features:
            features.append({**feature, "chart": charts.histogram(feature.get("histogram") or {})})
    return {
        "model": model,
        "latest": latest,
        "features": features,
        "drift_chart": charts.line(
            {"share of features drifted": [(r.created_at, r.drift_share) for r in history if r.tested_features]},
            y_label="share of features drifted",
            y_min=0,
            y_max=1,
            empty="No drift report with tested features yet: run a monitor once the log has enough rows.",
        ),
        "quality_chart": charts.line(
            {k: v for k, v in quality.items() if v},
            y_label="metric value",
            empty="No quality figures yet: they come from ground truth (feedback) joined to logged predictions.",
        ),
        "alerts": Alert.objects.filter(monitor__model=model, resolved_at__isnull=True).select_related("monitor"),
        "impact": business_impact(model.name, since=timezone.now() - timedelta(days=IMPACT_DAYS)),
        "impact_days": IMPACT_DAYS,
        "monitors": model.monitors.all(),
    }


@admin.register(Monitor)
class MonitorAdmin(admin.ModelAdmin):
    list_display = ["name", "model", "version", "enabled", "every_minutes", "last_run_at", "dashboard"]
    list_filter = ["enabled", "correction"]
    list_select_related = ["model"]
    raw_id_fields = ["model"]
    search_fields = ["name", "model__name"]
    actions = ["run_now"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def get_urls(self):
        extra = [
            path(
                "model/<slug:name>/",
                self.admin_site.admin_view(self.dashboard_view),
                name="monitoring_model_dashboard",
            )
        ]
        return extra + super().get_urls()

    @admin.display(description="dashboard")
    def dashboard(self, monitor: Monitor) -> str:
        url = reverse("admin:monitoring_model_dashboard", args=[monitor.model.name])
        return format_html('<a href="{}">{}</a>', url, f"{monitor.model.name} monitoring")

    def dashboard_view(self, request: HttpRequest, name: str) -> HttpResponse:
        model = get_object_or_404(RegisteredModel, name=name)
        context = {
            **self.admin_site.each_context(request),
            **model_dashboard_context(model),
            "title": f"Monitoring: {model.name}",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/monitoring/dashboard.html", context)

    @admin.action(description="Run the selected monitors now")
    def run_now(self, request: HttpRequest, queryset) -> HttpResponseRedirect | None:
        for monitor in queryset.select_related("model"):
            report = monitor_run(monitor=monitor)
            verdict = "dataset drift" if report.dataset_drift else "no dataset drift"
            counts = f"{report.drifted_features}/{report.tested_features}"
            self.message_user(request, f"{monitor}, {report.watching}: {verdict} ({counts})")
        if queryset.count() == 1:
            monitor = queryset.first()
            return HttpResponseRedirect(reverse("admin:monitoring_model_dashboard", args=[monitor.model.name]))
        return None


@admin.register(DriftReport)
class DriftReportAdmin(admin.ModelAdmin):
    list_display = ["created_at", "model_name", "watching", "monitor", "drift", "current_rows", "duration_ms"]
    list_filter = ["dataset_drift", "model_name"]
    list_select_related = ["monitor"]
    raw_id_fields = ["monitor"]
    readonly_fields = [*(f.name for f in DriftReport._meta.fields), "watching"]

    @admin.display(description="version watched")
    def watching(self, report: DriftReport) -> str:
        return report.watching

    @admin.display(description="drift")
    def drift(self, report: DriftReport) -> str:
        colour = "#dc3545" if report.dataset_drift else "#198754"
        return format_html(
            '<span style="color:{}">{}/{} ({})</span>',
            colour,
            report.drifted_features,
            report.tested_features,
            f"{report.drift_share:.0%}",
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["opened_at", "kind", "subject", "monitor", "version_label", "state", "message", "webhook_status"]
    list_filter = ["kind", ("resolved_at", admin.EmptyFieldListFilter)]
    list_select_related = ["monitor__model"]
    raw_id_fields = ["monitor", "last_report"]
    readonly_fields = [f.name for f in Alert._meta.fields]

    @admin.display(description="version", ordering="version")
    def version_label(self, alert: Alert) -> str:
        return f"v{alert.version}" if alert.version is not None else "-"

    @admin.display(description="state")
    def state(self, alert: Alert) -> str:
        if alert.open:
            return "open"
        resolved = f"resolved {alert.resolved_at:%Y-%m-%d %H:%M}"
        return f"{resolved}: {alert.resolution}" if alert.resolution else resolved

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ["request_id", "model_name", "version", "routing_key", "actual", "observed_at", "joined_at"]
    list_filter = ["model_name", ("joined_at", admin.EmptyFieldListFilter)]
    search_fields = ["request_id", "routing_key"]


@admin.register(BusinessEvent)
class BusinessEventAdmin(admin.ModelAdmin):
    list_display = ["occurred_at", "name", "key", "value", "event_id"]
    list_filter = ["name"]
    search_fields = ["key", "event_id"]


@admin.register(ReferenceDataset)
class ReferenceDatasetAdmin(admin.ModelAdmin):
    list_display = ["version", "source", "rows", "created_at"]
    list_select_related = ["version__model"]
    raw_id_fields = ["version"]
