"""Experiment reads: the results page (period, allocation, sample ratio check, per-arm metrics, sample size,
progress)."""

from __future__ import annotations

import math
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet

from experiments import stats
from experiments.metrics import MetricData, metric_data
from experiments.models import Experiment, ExperimentArm, Exposure, MetricKind
from experiments.stats import Moments


def experiment_list() -> QuerySet[Experiment]:
    return Experiment.objects.select_related("model", "winner").prefetch_related("arms__version")


def experiment_get(name: str) -> Experiment:
    return experiment_list().get(name=name)


def _number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: undefined statistics are null."""
    return None if value is None or math.isnan(value) or math.isinf(value) else value


def _interval(interval: stats.Interval) -> list[float | None]:
    return [_number(interval.low), _number(interval.high)]


def allocation(experiment: Experiment, arms: list[ExperimentArm]) -> dict[str, Any]:
    """Exposed keys per arm, and the sample ratio check on the exposures since the allocation last changed.

    Keys first exposed before a weight change were split by the weights of their time, so only later exposures
    are compared with today's weights.
    """
    exposures = Exposure.objects.filter(experiment=experiment)
    total = dict(exposures.values("arm").annotate(n=Count("id")).values_list("arm", "n"))
    since = experiment.allocation_changed_at
    recent = exposures.filter(first_seen_at__gte=since) if since else exposures
    checked = dict(recent.values("arm").annotate(n=Count("id")).values_list("arm", "n"))
    observed = [checked.get(arm.name, 0) for arm in arms]
    srm = stats.sample_ratio_mismatch(observed, [arm.buckets for arm in arms])
    return {
        "arms": [
            {
                "name": arm.name,
                "version": arm.version.version,
                "weight": arm.weight,
                "expected_share": arm.buckets / 1e4,
                "exposed": total.get(arm.name, 0),
                "exposed_since_allocation_change": checked.get(arm.name, 0),
                "ranges": arm.ranges,
            }
            for arm in arms
        ],  # fmt: skip
        "srm": {
            "chi2": _number(srm.chi2),
            "p_value": srm.p_value,
            "mismatch": srm.mismatch,
            "threshold": stats.SRM_THRESHOLD,
            "since": since,
        },  # fmt: skip
    }


def metric_result(experiment: Experiment, data: MetricData, arms: list[ExperimentArm]) -> dict[str, Any]:
    control = data.total[arms[0].name]
    compare = stats.compare_proportions if data.binary else stats.compare_means
    rows = []
    for arm in arms:
        moments = data.total[arm.name]
        summary = stats.summarize(moments, binary=data.binary, alpha=experiment.alpha)
        row: dict[str, Any] = {"arm": arm.name, "version": arm.version.version, "n": summary.n,
                               "mean": _number(summary.mean), "ci": _interval(summary.ci)}  # fmt: skip
        if arm.position > 0:
            result = compare(control, moments, experiment.alpha)
            better = _number(result.absolute_lift)
            if better is not None and data.lower_is_better:
                better = -better
            row["vs_control"] = {
                "absolute_lift": _number(result.absolute_lift), "absolute_ci": _interval(result.absolute_ci),
                "relative_lift": _number(result.relative_lift), "relative_ci": _interval(result.relative_ci),
                "p_value": _number(result.p_value), "test": result.test,
                "significant": result.p_value < experiment.alpha if not math.isnan(result.p_value) else False,
                "better": None if better is None else better > 0,
            }  # fmt: skip
        rows.append(row)
    return {"label": data.label, "binary": data.binary, "lower_is_better": data.lower_is_better,
            "arms": rows, "series": series(data, arms)}  # fmt: skip


def series(data: MetricData, arms: list[ExperimentArm]) -> dict[str, Any]:
    """The cumulative metric per arm at the end of each day (by first exposure, or prediction day for quality)."""
    days = sorted({day for arm in arms for day in data.daily[arm.name]})
    out: dict[str, list[float | None]] = {}
    for arm in arms:
        running, points = Moments(0, 0.0, 0.0), []
        for day in days:
            add = data.daily[arm.name].get(day)
            if add is not None:
                running = running + add
            points.append(_number(running.mean) if running.n else None)
        out[arm.name] = points
    return {"days": [day.isoformat() for day in days], "arms": out}


def planned_sample_size(experiment: Experiment, control: Moments, binary: bool) -> dict[str, Any]:
    """Units per arm to detect the minimum detectable effect (relative to the control's observed mean)."""
    baseline = control.mean if control.n else math.nan
    if binary:
        target = baseline * (1 + experiment.minimum_detectable_effect)
        effect = stats.proportion_effect_size(baseline, target) if 0 < baseline < 1 and 0 < target < 1 else math.nan
    else:
        sd = math.sqrt(control.variance) if control.n > 1 else math.nan
        effect = baseline * experiment.minimum_detectable_effect / sd if sd and not math.isnan(sd) else math.nan
    required = (
        stats.required_sample_size(effect, experiment.alpha, experiment.power) if not math.isnan(effect) else None
    )
    planned = experiment.minimum_sample_size
    if required is not None and not math.isinf(required):
        planned = max(planned, math.ceil(required))
    return {"required_for_mde": None if required is None else _number(math.ceil(required)), "planned": planned,
            "baseline": _number(baseline), "mde": experiment.minimum_detectable_effect, "power": experiment.power,
            "alpha": experiment.alpha}  # fmt: skip


SINCE_WEIGHT_CHANGE, ALL_PERIODS = "since_weight_change", "all"
PERIODS = (SINCE_WEIGHT_CHANGE, ALL_PERIODS)


def results_period(value: str | None) -> str:
    """The results period asked for (`?period=`), the default when none: since the last weight change."""
    if value in (None, ""):
        return SINCE_WEIGHT_CHANGE
    if value not in PERIODS:
        raise ValidationError({"period": [f"'{value}' is not a period: {' or '.join(PERIODS)}"]})
    return value


def period_of(experiment: Experiment, period: str = SINCE_WEIGHT_CHANGE) -> dict[str, Any]:
    """Which exposures the results count, and whether they mix allocations.

    A key keeps the arm of its first exposure, so after a weight change the arms hold keys that arrived under
    different weights: an arm that grew holds more late keys than the others, and anything that changed over time
    (weekdays, a campaign, novelty) then reads as a difference between arms. Results over all periods mix those
    allocations; the default counts only keys first exposed since the last change (GrowthBook refuses the mix).
    """
    started, changed = experiment.started_at, experiment.allocation_changed_at
    last_change = changed if started is not None and changed is not None and changed > started else None
    changes = (
        list(
            experiment.events.filter(action="experiment.weights_changed", created_at__gte=started)
            .order_by("created_at")
            .values_list("created_at", flat=True)
        )
        if last_change is not None
        else []
    )
    since = last_change if period == SINCE_WEIGHT_CHANGE else None
    mixed = last_change is not None and since is None
    left_out = (
        Exposure.objects.filter(experiment=experiment, first_seen_at__lt=since).count() if since is not None else 0
    )
    if mixed:
        note = (
            "These results mix periods with different allocations: the weights changed while the experiment ran "
            f"(last at {last_change.isoformat()}), and keys keep the arm of their first exposure, so the arms hold "
            "keys from different periods and the comparison can be biased. The default view counts only keys first "
            "exposed since the last weight change."
        )
    elif since is not None:
        note = (
            f"Results since the last weight change ({since.isoformat()}): {left_out} key(s) first exposed before it "
            "are left out, because they were split by the earlier weights. Ask for period=all to include them."
        )
    else:
        note = "One allocation throughout: the weights did not change while the experiment ran."
    return {
        "selected": period,
        "since": since,
        "weights_changed_at": changes,
        "mixed_allocations": mixed,
        "left_out": left_out,
        "note": note,
    }


def experiment_results(experiment: Experiment, period: str = SINCE_WEIGHT_CHANGE) -> dict[str, Any]:
    """The results page; by default over the keys first exposed since the last weight change (see period_of)."""
    period_block = period_of(experiment, results_period(period))
    since = period_block["since"]
    arms = list(experiment.arms.select_related("version").order_by("position"))
    names = [arm.name for arm in arms]
    data = metric_data(experiment, experiment.primary_metric, names, since)
    primary = {"metric": experiment.primary_metric, **metric_result(experiment, data, arms)}
    guardrails = [
        {"metric": spec, **metric_result(experiment, metric_data(experiment, spec, names, since), arms)}
        for spec in experiment.guardrail_metrics
    ]
    sample = planned_sample_size(experiment, data.total[names[0]], data.binary)
    # The key-based metrics count exposed keys; quality counts predictions with feedback.
    smallest = min(row["n"] for row in primary["arms"])
    sample["smallest_arm"] = smallest
    sample["progress"] = smallest / sample["planned"] if sample["planned"] else 0.0
    sample["complete"] = smallest >= sample["planned"]
    checks = allocation(experiment, arms)
    checks["srm"]["mixed_allocations"] = period_block["mixed_allocations"]
    return {
        "experiment": experiment.name,
        "status": experiment.status,
        # A broken split, or arms compared across allocations: either way the comparison is not a fair one.
        "trustworthy": not checks["srm"]["mismatch"] and not period_block["mixed_allocations"],
        "period": period_block,
        "allocation": checks,
        "primary": primary,
        "guardrails": guardrails,
        "sample_size": sample,
        "peeking": stats.PEEKING_NOTE,
        "unit": "prediction with feedback" if experiment.primary_metric["kind"] == MetricKind.QUALITY else "key",
    }
