"""A page per model in the console: everything about one model in one place.

Versions with their metrics side by side (and a comparison of any two or more: metrics, signature and gate reports),
a chart of each metric across versions, the aliases with move buttons (through the registry's service, which checks
the permission), the traffic now and over the last day, the rollouts' and experiments' timelines, the monitors and
their drift trend, the feature views the model reads, and a try-a-prediction form generated from the signature.
Like the home page it joins every app, so it lives in config/; every write goes through an app's service.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

from django import forms
from django.urls import reverse
from django.utils import timezone

from config import charts
from experiments.models import Experiment
from monitoring.models import DriftReport
from registry.models import ModelVersion, RegisteredModel
from rollouts.models import Rollout
from serving.batch_models import BatchJob

TRAFFIC_HISTORY = timedelta(days=1)
TIMELINE_ITEMS = 5


# --- Try a prediction: a form from the signature ------------------------------------------------------------------


def _field(spec: dict[str, Any]) -> forms.Field:
    name, dtype, nullable = spec["name"], spec.get("dtype", "float"), spec.get("nullable", False)
    bounds = {k: spec[k] for k in ("min", "max") if spec.get(k) is not None}
    hint = ", ".join(f"{k} {v}" for k, v in bounds.items())
    if dtype == "category":
        allowed = spec.get("allowed") or []
        choices = [("", "(missing)")] if nullable else []
        return forms.ChoiceField(
            label=name, choices=choices + [(str(v), str(v)) for v in allowed], required=not nullable, help_text=hint
        )
    if dtype == "bool":
        return forms.TypedChoiceField(
            label=name,
            choices=[("true", "true"), ("false", "false")],
            coerce=lambda v: v == "true",
            required=not nullable,
        )
    field_class = forms.IntegerField if dtype == "int" else forms.FloatField
    field = field_class(
        label=name,
        required=not nullable,
        min_value=bounds.get("min"),
        max_value=bounds.get("max"),
        help_text=hint,
    )
    if dtype != "int":
        field.widget.attrs["step"] = "any"
    return field


def _initial(spec: dict[str, Any]) -> Any:
    if spec.get("dtype") == "category":
        return str((spec.get("allowed") or [""])[0])
    if spec.get("dtype") == "bool":
        return "false"
    low, high = spec.get("min"), spec.get("max")
    if low is not None and high is not None:
        middle = (low + high) / 2
        return round(middle) if spec.get("dtype") == "int" else round(middle, 6)
    return low if low is not None else (high if high is not None else 0)


class TryPredictionForm(forms.Form):
    """One row for the version's signature: typed fields, ranges as bounds, categories as a choice. Inputs the
    feature store fills are left out; the routing key (which a split uses, and the store's entity id) is asked."""

    routing_key = forms.CharField(required=False, max_length=200, help_text="optional: for splits and features")

    def __init__(self, *args: Any, signature: dict[str, Any], **kwargs: Any) -> None:
        self.inputs = [spec for spec in signature.get("inputs", []) if not spec.get("feature")]
        kwargs.setdefault("initial", {f"in_{spec['name']}": _initial(spec) for spec in self.inputs})
        super().__init__(*args, **kwargs)
        for spec in self.inputs:
            self.fields[f"in_{spec['name']}"] = _field(spec)

    def instance(self) -> dict[str, Any]:
        return {spec["name"]: self.cleaned_data.get(f"in_{spec['name']}") for spec in self.inputs}


def try_prediction(model: RegisteredModel, form: TryPredictionForm, *, request: Any = None) -> dict[str, Any]:
    """Answer the form's row through the serving service, as the API would (routed, validated, logged with the
    request's id and its user as the caller)."""
    from serving import services as serving  # the prediction path, called once per click

    started = time.perf_counter()
    prediction = serving.predict(
        model_name=model.name,
        payload={"instances": [form.instance()]},
        routing_key=form.cleaned_data.get("routing_key") or None,
        request_id=getattr(request, "request_id", None),
        caller=f"user:{request.user.pk}" if request is not None else "",
    )
    body = prediction.as_json()
    return {
        "version": prediction.version,
        "route": prediction.route,
        "prediction": prediction.predictions[0],
        "probabilities": (
            list(zip(prediction.classes or [], prediction.probabilities[0], strict=False))
            if prediction.probabilities
            else None
        ),
        "latency_ms": (time.perf_counter() - started) * 1000,
        "request_id": prediction.request_id,
        "body": body,
    }


# --- Versions, compared ---------------------------------------------------------------------------------------------


def metrics_of(version: ModelVersion) -> dict[str, float]:
    """The metrics the gates judged (computed from the evaluation data where there was some), else those submitted."""
    return (version.gate_report or {}).get("metrics") or version.metrics or {}


def _metric_names(versions: list[ModelVersion]) -> list[str]:
    names: dict[str, None] = {}
    for version in versions:
        for name in metrics_of(version):
            names.setdefault(name, None)
    return list(names)


def signature_diff(versions: list[ModelVersion]) -> list[dict[str, Any]]:
    """Per input name, its spec in each version (None where absent), and whether they differ."""
    specs = [{spec["name"]: spec for spec in v.signature.get("inputs", [])} for v in versions]
    names: dict[str, None] = {}
    for per_version in specs:
        for name in per_version:
            names.setdefault(name, None)
    rows = []
    for name in names:
        cells = [per_version.get(name) for per_version in specs]
        described = [
            None
            if c is None
            else ", ".join(f"{k} {c[k]}" for k in ("dtype", "min", "max", "allowed", "feature") if c.get(k) is not None)
            for c in cells
        ]
        rows.append({"name": name, "cells": described, "differs": len({str(d) for d in described}) > 1})
    return rows


def comparison(versions: list[ModelVersion]) -> dict[str, Any]:
    metrics = _metric_names(versions)
    first = versions[0]
    return {
        "versions": versions,
        "metrics": [
            {
                "name": name,
                "cells": [
                    {
                        "value": metrics_of(v).get(name),
                        "delta": (
                            metrics_of(v)[name] - metrics_of(first)[name]
                            if i and name in metrics_of(v) and name in metrics_of(first)
                            else None
                        ),
                    }
                    for i, v in enumerate(versions)
                ],
            }
            for name in metrics
        ],
        "signature": signature_diff(versions),
        "gates": [
            {"version": v, "outcome": v.gate_report.get("outcome"), "rules": v.gate_report.get("rules") or []}
            for v in versions
        ],
    }


# --- The page --------------------------------------------------------------------------------------------------------


def _traffic_by_version(model: RegisteredModel) -> dict[str, list[tuple[Any, int]]]:
    from monitoring.traffic import traffic_per_minute

    counted = traffic_per_minute([model.name], since=timezone.now() - TRAFFIC_HISTORY).get(model.name, {})
    series: dict[str, list[tuple[Any, int]]] = {}
    for version, by_minute in sorted(counted.items()):
        hours: dict[Any, int] = defaultdict(int)
        for minute, (requests, _errors) in by_minute.items():
            hours[minute.replace(minute=0)] += requests
        series[f"v{version}"] = sorted(hours.items())
    return series


def _feature_views(versions: list[ModelVersion]) -> list[dict[str, Any]]:
    from features.models import FeatureView

    names = sorted(
        {
            spec["feature"].split(":", 1)[0]
            for v in versions
            for spec in v.signature.get("inputs", [])
            if spec.get("feature")
        }
    )
    found = {view.name: view for view in FeatureView.objects.filter(name__in=names)}
    return [
        {
            "name": name,
            "url": reverse("admin:features_featureview_change", args=[found[name].pk]) if name in found else None,
        }
        for name in names
    ]


def page_context(model: RegisteredModel, compare: list[int]) -> dict[str, Any]:
    from config import console

    versions = list(model.versions.order_by("version"))
    metrics = _metric_names(versions)
    aliases = list(model.aliases.select_related("version").order_by("name"))
    status = next(iter(console.model_statuses(names=[model.name])), None)
    chosen = [v for v in versions if v.version in set(compare)]
    rollouts = list(
        Rollout.objects.filter(model=model)
        .select_related("candidate", "baseline")
        .order_by("-created_at")[:TIMELINE_ITEMS]
    )
    experiments = list(Experiment.objects.filter(model=model).order_by("-created_at")[:TIMELINE_ITEMS])
    reports = list(
        DriftReport.objects.filter(model_name=model.name, tested_features__gt=0).order_by("-created_at")[:60]
    )
    return {
        "model": model,
        "versions": versions,
        "metric_names": metrics,
        "version_rows": [{"version": v, "metrics": [metrics_of(v).get(m) for m in metrics]} for v in versions],
        "metric_charts": [
            {
                "name": name,
                "chart": charts.points(
                    [f"v{v.version}" for v in versions if name in metrics_of(v)],
                    {name: [metrics_of(v)[name] for v in versions if name in metrics_of(v)]},
                    y_label=name,
                    x_label="version",
                    height=180,
                ),
            }
            for name in metrics
        ],
        "aliases": aliases,
        "status": status,
        "comparison": comparison(chosen) if len(chosen) >= 2 else None,
        "traffic_chart": charts.line(
            _traffic_by_version(model),
            y_label="requests per hour",
            empty="No predictions in the last day.",
        ),
        "rollouts": [
            {"rollout": r, "events": list(r.events.order_by("created_at", "id")), "url": _change_url(r)}
            for r in rollouts
        ],
        "experiments": [
            {"experiment": e, "events": list(e.events.order_by("created_at", "id")), "url": _change_url(e)}
            for e in experiments
        ],
        "monitors": list(model.monitors.order_by("name")),
        "drift_chart": charts.line(
            {"share of features drifted": [(r.created_at, r.drift_share) for r in reversed(list(reports))]},
            y_label="share of features drifted",
            y_min=0,
            y_max=1,
            empty="No drift report yet: add a monitor and let it run.",
        ),
        "dashboard_url": reverse("admin:monitoring_model_dashboard", args=[model.name]),
        "feature_views": _feature_views(versions),
        "batch_jobs": list(
            BatchJob.objects.filter(model=model).select_related("version").order_by("-created_at")[:TIMELINE_ITEMS]
        ),
        "batch_start_url": reverse("admin:serving_batchjob_add") + f"?model={model.pk}",
    }


def _change_url(obj: Any) -> str:
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
