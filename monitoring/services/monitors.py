"""Monitors: create them, and run one now (drift of the current window against the reference, plus quality)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from monitoring.drift.report import DriftOptions, drift_report
from monitoring.models import Correction, DriftReport, Monitor, WatchedAs
from monitoring.quality import CLASSIFICATION_METRICS, REGRESSION_METRICS
from monitoring.selectors import quality_metrics
from monitoring.services.alerts import alerts_evaluate
from monitoring.services.references import read_reference, reference_dataset_for
from monitoring.windows import Window, current_frame, feature_kinds
from registry import audit, refs
from registry.models import ModelVersion, RegisteredModel
from registry.selectors import production_version
from registry.webhooks.services import checked_url
from registry.webhooks.signing import new_secret

MONITOR_FIELDS = (
    "version", "enabled", "window_hours", "window_rows", "max_rows", "min_rows", "every_minutes", "p_threshold",
    "correction", "dataset_drift_share", "min_wasserstein", "min_psi", "quality_thresholds", "webhook_url",
)  # fmt: skip


def _check(monitor: Monitor) -> None:
    problems: dict[str, list[str]] = {}
    if not 0 < monitor.p_threshold < 1:
        problems["p_threshold"] = ["must be between 0 and 1"]
    if not 0 < monitor.dataset_drift_share <= 1:
        problems["dataset_drift_share"] = ["must be in (0, 1]"]
    if monitor.correction not in Correction.values:
        problems["correction"] = [f"must be one of {', '.join(Correction.values)}"]
    known = set(CLASSIFICATION_METRICS) | set(REGRESSION_METRICS)
    thresholds = monitor.quality_thresholds
    if not isinstance(thresholds, dict) or not all(
        k in known and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in thresholds.items()
    ):
        problems["quality_thresholds"] = [f"must map metrics ({', '.join(sorted(known))}) to numbers"]
    if (
        monitor.version is not None
        and not ModelVersion.objects.filter(model=monitor.model, version=monitor.version).exists()
    ):
        problems["version"] = [f"{monitor.model.name} has no version {monitor.version}"]
    if problems:
        raise ValidationError(problems)


def monitor_prepared(*, model: RegisteredModel, name: str, fields: dict[str, Any], monitor: Monitor | None = None):
    """The monitor `fields` would make (a new one of `model` named `name`, or `monitor` changed), checked but not
    saved: ValidationError by field, in words, when a setting is wrong. The API, the admin's forms and
    monitor_create/monitor_update all check through here."""
    unknown = set(fields) - set(MONITOR_FIELDS)
    if unknown:
        raise ValidationError({field: ["unknown setting"] for field in sorted(unknown)})
    fields = dict(fields)
    if fields.get("version") is not None:
        fields["version"] = refs.resolve(model, fields["version"]).version
    if monitor is None:
        if Monitor.objects.filter(model=model, name=name).exists():
            raise ValidationError({"name": [f"{model.name} already has a monitor named {name!r}"]})
        monitor = Monitor(model=model, name=name)
    previous_url = monitor.webhook_url
    for field, value in fields.items():
        setattr(monitor, field, value)
    _check(monitor)
    if monitor.webhook_url != previous_url or (monitor.webhook_url and not monitor.webhook_secret):
        # A new target is refused when it may not receive webhooks (it is checked again at every delivery), and
        # gets a new secret: whoever knew the old one is not told the new one. A monitor made before alerts were
        # signed gets its first secret when it is next saved.
        if monitor.webhook_url:
            checked_url(monitor.webhook_url, "webhook_url")
        monitor.webhook_secret = new_secret() if monitor.webhook_url else ""
    monitor.full_clean(validate_unique=False)
    return monitor


@transaction.atomic
def monitor_create(*, model: RegisteredModel, name: str, actor: Any = None, **fields: Any) -> Monitor:
    """A monitor of `model`. `version` pins it: a number or a reference (models:/NAME/3, models:/NAME@alias, resolved
    to the version it names now); without one it follows the production alias at every run. With a webhook URL it
    gets a secret signing its alert webhooks, on the returned row for the caller to show now: it is never shown
    again."""
    monitor = monitor_prepared(model=model, name=name, fields=fields)
    monitor.save()
    audit.record("monitor.created", target=monitor, before=None, after=monitor_snapshot(monitor), actor=actor,
                 source=audit.current_source())  # fmt: skip
    return monitor


@transaction.atomic
def monitor_update(*, monitor: Monitor, actor: Any = None, **fields: Any) -> Monitor:
    """Change a monitor's settings (MONITOR_FIELDS) with the checks monitor_create makes; nothing is stored when one
    fails. `version` takes a number or a reference, as at creation; None unpins it (follow production)."""
    current = Monitor.objects.select_for_update().select_related("model").get(pk=monitor.pk)
    before = monitor_snapshot(current)
    current = monitor_prepared(model=current.model, name=current.name, fields=fields, monitor=current)
    current.save()
    audit.record("monitor.changed", target=current, before=before, after=monitor_snapshot(current), actor=actor,
                 source=audit.current_source())  # fmt: skip
    return current


def monitor_snapshot(monitor: Monitor) -> dict[str, Any]:
    """The monitor's settings as the audit trail keeps them; the webhook URL (it may hold a secret) only as set."""
    values = audit.snapshot(monitor, ("model", "name", *MONITOR_FIELDS))
    values["webhook_url"] = bool(values["webhook_url"])
    return values


def watched_version(monitor: Monitor) -> tuple[ModelVersion | None, WatchedAs]:
    """The version this monitor watches now: its pin, or else where the production alias points at this moment
    (read at every run, so a promotion moves the monitor with it). None when unpinned and there is no production."""
    if monitor.version is not None:
        pinned = ModelVersion.objects.select_related("model").filter(model=monitor.model, version=monitor.version)
        return pinned.first(), WatchedAs.PINNED
    version = production_version(monitor.model)
    return version, (WatchedAs.PRODUCTION if version is not None else WatchedAs.NONE)


def monitor_run(*, monitor: Monitor, progress: Callable[[int], None] | None = None) -> DriftReport:
    """Run one monitor now and store its report; alerts are opened or resolved and their webhooks queued."""
    started = time.perf_counter()
    now = timezone.now()
    since = None if monitor.window_rows else now - timedelta(hours=monitor.window_hours)
    window = Window(since=since, until=now, last_rows=monitor.window_rows, cap=monitor.max_rows)
    version, watched_as = watched_version(monitor)
    report = DriftReport(
        monitor=monitor,
        model_name=monitor.model.name,
        version=version.version if version else 0,
        watched_as=watched_as if version else WatchedAs.NONE,
        reference_rows=0,
        current_rows=0,
        window_start=since,
        window_end=now,
    )
    if version is None:
        report.note = report.watching  # "<model> has no production version to watch": a result, not an error
    else:
        _measure(monitor, version, window, report, progress)
    report.duration_ms = (time.perf_counter() - started) * 1000
    with transaction.atomic():
        report.save()
        Monitor.objects.filter(pk=monitor.pk).update(last_run_at=now)
        alerts_evaluate(monitor=monitor, report=report)
    return report


def _measure(monitor, version, window, report, progress) -> None:
    kinds, skipped = feature_kinds(version)
    dataset = reference_dataset_for(version)
    # The reference file is parsed while Postgres unpacks the window (psycopg2 releases the GIL while it waits).
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read_reference, dataset, version) if dataset is not None else None
        current = current_frame(version, window)
        sample = pending.result() if pending is not None else None
    report.current_rows = len(current)
    report.quality = quality_metrics(version.model.name, version.version, since=window.since, until=window.until)
    notes = [f"pii features not monitored: {', '.join(skipped)}"] if skipped else []
    if sample is None:
        notes.append(f"{version} has no reference sample: register it with evaluation data or upload one")
    elif len(current) < monitor.min_rows:
        report.reference_rows = len(sample.frame)
        notes.append(f"{len(current)} rows in the window, fewer than the {monitor.min_rows} a verdict needs")
    else:
        report.reference_rows = len(sample.frame)
        options = DriftOptions(
            p_threshold=monitor.p_threshold,
            correction=monitor.correction,
            dataset_drift_share=monitor.dataset_drift_share,
            min_wasserstein=monitor.min_wasserstein,
            min_psi=monitor.min_psi,
        )
        result = drift_report(sample.frame, current, kinds, options, progress, sample.numeric_sorted)
        report.features = result["features"]
        report.tested_features = result["tested"]
        report.drifted_features = result["drifted"]
        report.drift_share = result["share"]
        report.dataset_drift = result["dataset_drift"]
    report.note = "; ".join(notes)


def monitors_claim_due(now=None) -> list[Monitor]:
    """Enabled monitors whose interval has passed, each claimed with a conditional UPDATE so that two beat ticks
    (or two schedulers) never queue the same run twice."""
    now = now or timezone.now()
    claimed = []
    for monitor in Monitor.objects.filter(enabled=True).select_related("model"):
        if monitor.last_run_at is not None and monitor.last_run_at + timedelta(minutes=monitor.every_minutes) > now:
            continue
        if Monitor.objects.filter(pk=monitor.pk, last_run_at=monitor.last_run_at).update(last_run_at=now) == 1:
            claimed.append(monitor)
    return claimed
