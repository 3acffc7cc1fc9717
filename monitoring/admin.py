"""Monitoring in the admin: per model the latest drift report (table and histograms), drift and quality over time,
open alerts; monitors can be run from here, and the dashboard exports as one standalone HTML file. Alerts are
acknowledged, silenced and resolved by button or list action; feedback, business events and reference samples are
uploaded as CSV (preview, then a summary by row). Every change goes through monitoring's services, with the API's
checks. Charts are drawn by the console's vendored Chart.js (config/charts.py): nothing from a CDN."""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Callable
from datetime import timedelta

import pandas as pd
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.staticfiles import finders
from django.core.exceptions import ValidationError
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from config import charts
from config.admin_forms import NumbersByNameField, add_service_errors
from monitoring.api import csv_rows
from monitoring.models import Alert, BusinessEvent, DriftReport, Feedback, Monitor, ReferenceDataset
from monitoring.quality import CLASSIFICATION_METRICS, REGRESSION_METRICS
from monitoring.selectors import business_impact, ood_summary
from monitoring.services import alerts, references
from monitoring.services.monitors import (
    MONITOR_FIELDS,
    monitor_create,
    monitor_prepared,
    monitor_run,
    monitor_update,
)
from registry import permissions
from registry.models import ModelVersion, RegisteredModel, Task
from registry.webhooks.targets import mask_url
from serving.admin import KeyedSearchMixin

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
        "ood": ood_summary(model.name),
        "monitors": model.monitors.all(),
    }


INLINE_SCRIPTS = [
    "console/vendor/chart.umd.min.js",
    "console/vendor/chartjs-adapter-date-fns.bundle.min.js",
    "console/charts.js",
]


def _static_text(name: str) -> str:
    found = finders.find(name)
    if not found:
        raise FileNotFoundError(f"static file {name} is missing: the exported report could not draw its charts")
    with open(found, encoding="utf-8") as handle:
        return handle.read()


def _inline_assets() -> dict[str, object]:
    # "</" inside a script element would end it early; "<\/" means the same to JavaScript.
    scripts = [mark_safe(_static_text(name).replace("</", "<\\/")) for name in INLINE_SCRIPTS]  # noqa: S308
    return {"scripts": scripts, "css": mark_safe(_static_text("console/console.css").replace("</", "<\\/"))}  # noqa: S308


def _may_see_webhook(user, monitor: Monitor) -> bool:
    """A webhook URL often embeds a token: whole to those who may change the monitor's model, masked to the rest."""
    return permissions.holds(user, permissions.WRITE, monitor.model) or permissions.holds(user, permissions.ADMIN)


def version_choices(model: RegisteredModel | None) -> list:
    """ "Follow production" and the versions of `model` (of every model, grouped, when none is chosen yet)."""
    versions = ModelVersion.objects.select_related("model").order_by("model__name", "-version")
    if model is not None:
        versions = versions.filter(model=model)
    groups: dict[str, list[tuple[int, str]]] = {}
    for version in versions:
        groups.setdefault(version.model.name, []).append((version.version, f"v{version.version} ({version.status})"))
    return [("", "follow the production alias at each run"), *groups.items()]


class MonitorForm(forms.ModelForm):
    """Checked by monitoring.services.monitors.monitor_prepared, as the API's monitors are."""

    version = forms.TypedChoiceField(
        coerce=int, empty_value=None, required=False, help_text="pin a version, or follow production"
    )
    webhook_url = forms.URLField(
        required=False, max_length=200, assume_scheme="https",
        help_text="http(s) only, never a private, loopback or link-local address; a new URL gets a new signing secret",
    )  # fmt: skip
    quality_thresholds = NumbersByNameField(
        sorted(set(CLASSIFICATION_METRICS) | set(REGRESSION_METRICS)),
        help_text="alert when a metric from ground truth crosses this (a minimum for accuracy, f1, precision, recall, "
        "roc_auc, r2; a maximum for mae, rmse); empty: no alert on that metric",
    )

    class Meta:
        model = Monitor
        fields = ["model", "name", *MONITOR_FIELDS]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        model = self.instance.model if self.instance.pk else None
        self.fields["version"].choices = version_choices(model)
        if model is not None:
            names = REGRESSION_METRICS if model.task == Task.REGRESSION else CLASSIFICATION_METRICS
            self.fields["quality_thresholds"] = NumbersByNameField(
                list(names), help_text=self.fields["quality_thresholds"].help_text
            )

    def _post_clean(self) -> None:
        """After the model's own checks, the service's (in its words): ranges, metric names, the pinned version."""
        super()._post_clean()
        data = self.cleaned_data
        model = data.get("model") or (self.instance.model if self.instance.pk else None)
        if self.errors or model is None:
            return
        fields = {name: data[name] for name in MONITOR_FIELDS if name in data}
        try:
            monitor_prepared(
                model=model, name=self.instance.name if self.instance.pk else data["name"], fields=fields,
                monitor=Monitor.objects.get(pk=self.instance.pk) if self.instance.pk else None,
            )  # fmt: skip
        except ValidationError as exc:
            add_service_errors(self, exc)


@admin.register(Monitor)
class MonitorAdmin(admin.ModelAdmin):
    form = MonitorForm
    list_display = ["name", "model", "version", "enabled", "every_minutes", "last_run_at", "dashboard"]
    list_filter = ["enabled", "correction"]
    list_select_related = ["model"]
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
        extra.append(
            path(
                "model/<slug:name>/report.html",
                self.admin_site.admin_view(self.report_view),
                name="monitoring_model_report",
            )
        )
        return extra + super().get_urls()

    def get_fields(self, request: HttpRequest, obj: Monitor | None = None):
        fields = list(super().get_fields(request, obj))
        if obj is not None and not _may_see_webhook(request.user, obj):
            fields = ["webhook_target" if name == "webhook_url" else name for name in fields]
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: Monitor | None = None):
        readonly = ["model", "name", "last_run_at"] if obj else []
        return (
            [*readonly, "webhook_target"] if obj is not None and not _may_see_webhook(request.user, obj) else readonly
        )

    @admin.display(description="webhook URL")
    def webhook_target(self, monitor: Monitor) -> str:
        return mask_url(monitor.webhook_url)

    def save_model(self, request: HttpRequest, obj: Monitor, form, change: bool) -> None:
        fields = {name: form.cleaned_data[name] for name in MONITOR_FIELDS if name in form.cleaned_data}
        before = Monitor.objects.filter(pk=obj.pk).values_list("webhook_secret", flat=True).first() if change else ""
        if change:
            saved = monitor_update(monitor=obj, actor=request.user, **fields)
        else:
            saved = monitor_create(
                model=form.cleaned_data["model"], name=form.cleaned_data["name"], actor=request.user, **fields
            )
        obj.pk = saved.pk
        if saved.webhook_secret and saved.webhook_secret != before:  # a new webhook URL: a new secret, shown once
            self.message_user(
                request, f"The secret signing {saved}'s alert webhooks (shown once, store it now): "
                f"{saved.webhook_secret}", messages.WARNING,
            )  # fmt: skip

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

    def report_view(self, request: HttpRequest, name: str) -> HttpResponse:
        """The dashboard as one HTML file to download: data, chart library and drawing code inline, nothing fetched,
        so it opens from disk offline and can be mailed."""
        model = get_object_or_404(RegisteredModel, name=name)
        now = timezone.now()
        context = {**model_dashboard_context(model), "standalone": True, "generated_at": now, **_inline_assets()}
        html = render_to_string("admin/monitoring/report_standalone.html", context, request=request)
        response = HttpResponse(html, content_type="text/html; charset=utf-8")
        filename = f"drift-report-{model.name}-{now:%Y%m%d-%H%M}.html"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

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


ALERT_CONTROLS: dict[str, tuple[str, Callable[..., Alert]]] = {
    "acknowledge": ("Acknowledge", lambda alert, actor: alerts.alert_acknowledge(alert=alert, actor=actor)),
    **{
        f"silence-{period}": (
            f"Silence {period}",
            lambda alert, actor, p=period: alerts.alert_silence(alert=alert, period=p, actor=actor),
        )  # fmt: skip
        for period in alerts.SILENCE_PERIODS
    },
    "unsilence": (
        "Lift the silence",
        lambda alert, actor: alerts.alert_silence(alert=alert, period=timedelta(0), actor=actor),
    ),  # fmt: skip
    "resolve": ("Resolve", lambda alert, actor: alerts.alert_resolve(alert=alert, actor=actor)),
}


def _alert_controls(alert: Alert) -> list[tuple[str, str]]:
    """The buttons that make sense in the alert's state (the services refuse the others anyway)."""
    if not alert.open:
        return []
    names = [] if alert.acknowledged_at else ["acknowledge"]
    names += [f"silence-{period}" for period in alerts.SILENCE_PERIODS]
    names += ["unsilence"] if alert.silenced else []
    return [(name, ALERT_CONTROLS[name][0]) for name in [*names, "resolve"]]


def _alert_change(request: HttpRequest, alert: Alert, action: str) -> tuple[bool, str]:
    try:
        changed = ALERT_CONTROLS[action][1](alert, request.user)
    except alerts.AlertStateConflict as exc:
        return False, exc.message
    except ValidationError as exc:
        return False, " ".join(exc.messages)
    if action.startswith("silence"):
        return True, f"Alert {alert.pk} silenced until {timezone.localtime(changed.silenced_until):%Y-%m-%d %H:%M}."
    return True, f"Alert {alert.pk}: {ALERT_CONTROLS[action][0].lower()} done."


def _alert_action(action: str):
    def run(modeladmin: AlertAdmin, request: HttpRequest, queryset) -> None:
        for alert in queryset:
            done, message = _alert_change(request, alert, action)
            modeladmin.message_user(request, message, messages.SUCCESS if done else messages.ERROR)

    run.__name__ = action.replace("-", "_")
    return admin.action(description=f"{ALERT_CONTROLS[action][0]} the selected alerts", permissions=["change"])(run)


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["opened_at", "kind", "subject", "monitor", "version_label", "state", "message", "webhook_status"]
    list_filter = ["kind", ("resolved_at", admin.EmptyFieldListFilter)]
    list_select_related = ["monitor__model"]
    raw_id_fields = ["monitor", "last_report"]
    readonly_fields = [f.name for f in Alert._meta.fields]
    actions = [_alert_action(name) for name in ALERT_CONTROLS if name != "unsilence"]

    @admin.display(description="version", ordering="version")
    def version_label(self, alert: Alert) -> str:
        return f"v{alert.version}" if alert.version is not None else "-"

    @admin.display(description="state")
    def state(self, alert: Alert) -> str:
        if alert.open:
            state = "acknowledged" if alert.acknowledged_at else "open"
            if alert.silenced:
                state += f", silenced until {timezone.localtime(alert.silenced_until):%Y-%m-%d %H:%M}"
            return state
        resolved = f"resolved {alert.resolved_at:%Y-%m-%d %H:%M}"
        return f"{resolved}: {alert.resolution}" if alert.resolution else resolved

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self):
        control = self.admin_site.admin_view(self.control_view)
        return [path("<int:pk>/control/<str:action>/", control, name="monitoring_alert_control"), *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        alert = self.get_object(request, object_id)
        allowed = alert is not None and self.has_change_permission(request, alert)
        controls = _alert_controls(alert) if allowed else []
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "controls": controls})

    def control_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        back = HttpResponseRedirect(reverse("admin:monitoring_alert_change", args=[pk]))
        alert = get_object_or_404(Alert, pk=pk)
        if request.method != "POST" or action not in ALERT_CONTROLS or not self.has_change_permission(request, alert):
            return back
        done, message = _alert_change(request, alert, action)
        self.message_user(request, message, messages.SUCCESS if done else messages.ERROR)
        return back


UPLOAD_PREVIEW_ROWS = 20
UPLOAD_INTROS = {
    "feedback": "Ground truth for logged predictions, one row each: columns request_id (or routing_key and time),"
    " actual, and optionally model and time. It is checked and stored as POST /api/v1/feedback does.",
    "events": "Business events, one row each: columns key (the routing key), name, and optionally value, time and"
    " event_id (a repeated event id is a duplicate). Checked and stored as POST /api/v1/events does.",
    "reference": "A reference sample for one version: one column per signature input. The version predicts on it"
    " and drift is measured against it, as POST /api/v1/models/NAME/versions/N/reference does.",
}


class CSVUploadForm(forms.Form):
    file = forms.FileField(label="CSV file")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        limit = settings.MODELWORKS_MAX_BODY_MB
        if upload.size > limit * 1024 * 1024:  # the API's bound on a request body (MODELWORKS_MAX_BODY_MB)
            raise forms.ValidationError(f"at most {limit} MB per upload ({upload.size / 2**20:.1f} MB given)")
        return upload


class ReferenceUploadForm(CSVUploadForm):
    version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.select_related("model").order_by("model__name", "-version")
    )
    field_order = ["version", "file"]


class CSVUploadMixin:
    """An "Upload CSV" page: choose a file, see its first rows parsed with each row's problems, then store it and
    see what was stored and what refused, by row. The checks and the storing are the API's (monitoring.api.csv_rows
    and the services behind it); between the preview and the store the file waits in the session."""

    upload_kind = ""
    change_list_template = "admin/monitoring/upload_change_list.html"

    def get_urls(self):
        opts = self.model._meta
        upload = self.admin_site.admin_view(self.upload_view)
        name = f"{opts.app_label}_{opts.model_name}_upload"
        return [path("upload/", upload, name=name), *super().get_urls()]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None) -> HttpResponse:
        """Rows are added by upload (or the API), through the checks: there is no unchecked one-row form."""
        opts = self.model._meta
        return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_upload"))

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # what was stored is what was checked: rows are read-only here

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form_class = ReferenceUploadForm if self.upload_kind == "reference" else CSVUploadForm
        context: dict = {}
        form = form_class()
        if request.method == "POST" and "token" in request.POST:
            context = self._store(request)
        elif request.method == "POST":
            form = form_class(request.POST, request.FILES)
            if form.is_valid():
                context = self._preview(request, form)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Upload {self.model._meta.verbose_name_plural} as CSV",
            "opts": self.model._meta,
            "intro": UPLOAD_INTROS[self.upload_kind],
            "form": form,
            **context,
        }
        return TemplateResponse(request, "admin/monitoring/upload.html", context)

    def _preview(self, request: HttpRequest, form: forms.Form) -> dict:
        data = form.cleaned_data["file"].read()
        version = form.cleaned_data.get("version")
        token = uuid.uuid4().hex
        pending = {"data": base64.b64encode(data).decode(), "name": form.cleaned_data["file"].name}
        if version is not None:
            pending["version"] = version.pk
        if self.upload_kind == "reference":
            try:
                frame = pd.read_csv(io.BytesIO(data), nrows=UPLOAD_PREVIEW_ROWS, dtype=str, keep_default_na=False)
            except Exception as exc:
                form.add_error("file", f"not readable CSV: {exc}")
                return {}
            preview = {
                "columns": list(frame.columns),
                "rows": [(i + 2, list(values), []) for i, values in enumerate(frame.itertuples(index=False))],
                "total": sum(1 for _ in io.BytesIO(data)) - 1,
                "refusing": 0,
            }
        else:
            try:
                rows = csv_rows.parse_rows(self.upload_kind, data)
            except csv_rows.UnreadableCSV as exc:
                form.add_error("file", str(exc))
                return {}
            columns = list(rows[0].cells)
            shown = rows[:UPLOAD_PREVIEW_ROWS] + [r for r in rows[UPLOAD_PREVIEW_ROWS:] if r.problems][:50]
            preview = {
                "columns": columns,
                "rows": [(r.number, [r.cells.get(c, "") for c in columns], r.problems) for r in shown],
                "total": len(rows),
                "refusing": sum(1 for r in rows if r.problems),
            }
        request.session[f"mw-upload-{token}"] = pending
        return {"preview": preview, "token": token, "file_name": pending["name"], "version": version}

    def _store(self, request: HttpRequest) -> dict:
        pending = request.session.pop(f"mw-upload-{request.POST['token']}", None)
        if pending is None:
            return {"gone": True}
        data = base64.b64decode(pending["data"])
        summary: dict = {"file_name": pending["name"]}
        if self.upload_kind == "reference":
            version = ModelVersion.objects.select_related("model").get(pk=pending["version"])
            summary["version"] = version
            try:
                dataset = references.reference_dataset_upload(version=version, data=data)
            except ValidationError as exc:
                summary["failed"] = " ".join(exc.messages)
            else:
                summary["stored"] = (
                    f"{dataset.rows} rows ({len(dataset.columns)} columns) as the reference of {version}"
                )
        else:
            try:
                result = csv_rows.store_rows(self.upload_kind, csv_rows.parse_rows(self.upload_kind, data))
            except csv_rows.UnreadableCSV as exc:
                summary["failed"] = str(exc)
            else:
                recorded = result["recorded"]
                stored = recorded.get("stored", recorded.get("received", 0))
                words = [f"{stored} of {result['rows']} rows stored"]
                if recorded.get("duplicates"):
                    words.append(f"{recorded['duplicates']} duplicate(s) of events stored before")
                summary |= {"stored": ", ".join(words), "refused": result["refused"]}
        return {"summary": summary}


@admin.register(Feedback)
class FeedbackAdmin(KeyedSearchMixin, CSVUploadMixin, admin.ModelAdmin):
    upload_kind = "feedback"
    list_display = ["request_id", "model_name", "version", "routing_key", "actual", "observed_at", "joined_at"]
    list_filter = ["model_name", ("joined_at", admin.EmptyFieldListFilter)]
    search_fields = ["request_id", "routing_key"]


@admin.register(BusinessEvent)
class BusinessEventAdmin(KeyedSearchMixin, CSVUploadMixin, admin.ModelAdmin):
    upload_kind = "events"
    list_display = ["occurred_at", "name", "key", "value", "event_id"]
    list_filter = ["name"]
    search_fields = ["key", "event_id"]


@admin.register(ReferenceDataset)
class ReferenceDatasetAdmin(CSVUploadMixin, admin.ModelAdmin):
    upload_kind = "reference"
    list_display = ["version", "source", "rows", "created_at"]
    list_select_related = ["version__model"]
    raw_id_fields = ["version"]
