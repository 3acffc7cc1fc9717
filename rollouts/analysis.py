"""Is a rollout's candidate healthy? Candidate vs baseline on the same window of the shared prediction log.

The figures come from the prediction log in the database, so they cover the traffic of every web process. A verdict
is one of "healthy", "unhealthy" (with the reasons) or "inconclusive" (too few requests to judge). Every threshold
has a default below and can be overridden per rollout (`Rollout.analysis`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from django.db.models import Count

from monitoring.drift.categorical import categorical_drift
from monitoring.drift.numeric import numeric_drift
from rollouts.models import Rollout
from serving.models import Outcome, PredictionLog, logged_outputs

DEFAULTS: dict[str, float] = {
    "min_requests": 100,  # candidate requests a stage needs before it can be judged
    "max_extensions": 3,  # stages extended for lack of traffic before the rollout pauses as inconclusive
    "max_error_rate": 0.05,  # candidate error share above this: unhealthy
    "error_rate_margin": 0.02,  # ... or above the baseline's by more than this
    "p99_ratio": 1.5,  # candidate p99 latency above baseline p99 times this ...
    "p99_min_delta_ms": 10.0,  # ... and by at least this much (sub-millisecond noise is not a regression)
    "drift_p_value": 0.01,  # output distributions differ significantly (KS, or chi-square on classes) ...
    "drift_psi": 0.2,  # ... and by a size that matters (population stability index)
    "quality_margin": 0.05,  # with ground truth: candidate's metric below the baseline's by more than this
    "min_feedback": 30,  # labelled predictions per arm before quality counts
}
SAMPLE_LIMIT = 5000  # predictions per arm for the output-drift test: enough for KS, cheap for a tick


@dataclass
class Verdict:
    outcome: str  # healthy | unhealthy | inconclusive
    reasons: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def thresholds(rollout: Rollout) -> dict[str, float]:
    return {**DEFAULTS, **(rollout.analysis or {})}


def arm_reason(rollout: Rollout, arm: str) -> str:
    return rollout.arm_reason(arm)


def arm_figures(rollout: Rollout, arm: str, since: datetime, until: datetime) -> dict[str, Any]:
    """Requests, errors, p99 latency and a sample of predictions for one arm of the rollout in [since, until]."""
    rows = PredictionLog.objects.filter(
        route_reason=arm_reason(rollout, arm), created_at__gte=since, created_at__lte=until
    ).exclude(outcome__in=Outcome.shadows())
    outcomes = _outcome_counts(rows)
    requests = sum(outcomes.values())
    errors = sum(outcomes.get(outcome, 0) for outcome in Outcome.failures())
    answered = rows.filter(outcome=Outcome.OK)
    latencies = np.fromiter(answered.values_list("latency_ms", flat=True)[: SAMPLE_LIMIT * 4], dtype=float)
    predictions: list[Any] = []
    probabilities: list[list[float]] = []
    for outputs in answered.order_by("-id").values_list("outputs", flat=True)[:SAMPLE_LIMIT]:
        answer, probability = logged_outputs(outputs)
        predictions.extend(answer)
        probabilities.extend(probability or [])
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests if requests else None,
        "p99_ms": float(np.percentile(latencies, 99)) if latencies.size else None,
        "predictions": predictions,
        "probabilities": probabilities,
    }


def _outcome_counts(rows) -> dict[str, int]:
    return {row["outcome"]: row["n"] for row in rows.values("outcome").annotate(n=Count("id"))}


def value_drift(baseline: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Two-sample KS on the values and PSI over the baseline's deciles: monitoring's numeric drift statistics."""
    result = numeric_drift(np.sort(baseline)[None, :], np.sort(candidate)[None, :])
    return {"statistic": float(result.ks_statistic[0]), "p_value": float(result.p_value[0]),
            "psi": float(result.psi[0])}  # fmt: skip


def output_drift(baseline: dict[str, list], candidate: dict[str, list], *, classifier: bool) -> dict[str, Any]:
    """How differently the two arms predict. Regressors: KS + PSI on the predicted values. Classifiers: chi-square +
    PSI on the predicted classes, and KS + PSI on each class's probability, which also catches a shift that moves
    few labels (a miscalibrated candidate). The worst of these is the verdict's evidence."""
    if not classifier:
        drift = value_drift(np.asarray(baseline["predictions"], float), np.asarray(candidate["predictions"], float))
        return {"worst": {"test": "ks on predictions", **drift}}
    classes = categorical_drift(baseline["predictions"], candidate["predictions"])
    tests = {"classes": {"test": "chi-square on classes", "p_value": classes.p_value, "psi": classes.psi}}
    b_probs, c_probs = np.asarray(baseline["probabilities"], float), np.asarray(candidate["probabilities"], float)
    if b_probs.ndim == 2 and c_probs.ndim == 2 and b_probs.shape[1] == c_probs.shape[1]:
        for column in range(b_probs.shape[1]):
            tests[f"p(class {column})"] = {
                "test": f"ks on probability of class #{column}",
                **value_drift(b_probs[:, column], c_probs[:, column]),
            }
    worst = min(tests.values(), key=lambda t: (t["p_value"], -t["psi"]))
    return {"worst": worst, "tests": tests, "classes": classes.histogram["categories"]}


def _summary(arm: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arm.items() if k not in ("predictions", "probabilities")}


def analyse(rollout: Rollout, since: datetime, until: datetime, *, classifier: bool) -> Verdict:
    limits = thresholds(rollout)
    candidate = arm_figures(rollout, "candidate", since, until)
    baseline = arm_figures(rollout, "baseline", since, until)
    if baseline["requests"] < limits["min_requests"]:
        # At 100% the baseline gets nothing in the stage itself: compare with its traffic over the whole rollout.
        baseline = arm_figures(rollout, "baseline", rollout.created_at, until)
        baseline["window"] = "rollout"
    figures: dict[str, Any] = {
        "window": {"since": since.isoformat(), "until": until.isoformat()},
        "candidate": _summary(candidate),
        "baseline": _summary(baseline),
        "thresholds": limits,
    }
    if candidate["requests"] < limits["min_requests"]:
        return Verdict(
            "inconclusive",
            [f"not enough traffic: {candidate['requests']} candidate requests, {limits['min_requests']:.0f} needed"],
            figures,
        )
    reasons: list[str] = []
    rate, base_rate = candidate["error_rate"], baseline["error_rate"] or 0.0
    if rate > limits["max_error_rate"]:
        reasons.append(f"error rate {rate:.1%} above the {limits['max_error_rate']:.1%} limit")
    elif baseline["requests"] and rate > base_rate + limits["error_rate_margin"]:
        reasons.append(f"error rate {rate:.1%} above the baseline's {base_rate:.1%} by more than "
                       f"{limits['error_rate_margin']:.1%}")  # fmt: skip
    p99, base_p99 = candidate["p99_ms"], baseline["p99_ms"]
    slower = p99 is not None and base_p99 is not None and p99 > base_p99 * limits["p99_ratio"]
    if slower and p99 - base_p99 >= limits["p99_min_delta_ms"]:
        reasons.append(f"p99 latency {p99:.1f} ms above {limits['p99_ratio']:g}x the baseline's {base_p99:.1f} ms")
    if candidate["predictions"] and baseline["predictions"]:
        drift = output_drift(baseline, candidate, classifier=classifier)
        figures["output_drift"] = drift
        drifted = [t for t in drift.get("tests", {"worst": drift["worst"]}).values()
                   if t["p_value"] < limits["drift_p_value"] and t["psi"] >= limits["drift_psi"]]  # fmt: skip
        if drifted:
            worst = max(drifted, key=lambda t: t["psi"])
            reasons.append(f"output drift: {worst['test']} PSI {worst['psi']:.3f} (limit {limits['drift_psi']:g}), "
                           f"p-value {worst['p_value']:.2g}")  # fmt: skip
    quality = quality_comparison(rollout, until, classifier=classifier, limits=limits)
    if quality is not None:
        figures["quality"] = quality
        if quality["worse"]:
            reasons.append(f"quality: {quality['metric']} {quality['candidate']:.3f} below the baseline's "
                           f"{quality['baseline']:.3f} by more than {limits['quality_margin']:g}")  # fmt: skip
    return Verdict("unhealthy" if reasons else "healthy", reasons, figures)


def quality_comparison(rollout: Rollout, until: datetime, *, classifier: bool, limits: dict[str, float]):
    """Accuracy (classifiers) or R2 (regressors) from ground truth for both arms' predictions since the rollout
    began — feedback arrives late, so the whole rollout rather than the stage — once each arm has `min_feedback`
    labelled predictions; None before that."""
    from monitoring.selectors import quality_metrics  # monitoring reads serving's log; imported late, no cycle

    metric = "accuracy" if classifier else "r2"
    name = rollout.model.name
    candidate = quality_metrics(name, rollout.candidate.version, since=rollout.created_at, until=until)
    baseline = quality_metrics(name, rollout.baseline.version, since=rollout.created_at, until=until)
    enough = min(candidate["n"], baseline["n"]) >= limits["min_feedback"]
    if not enough or candidate[metric] is None or baseline[metric] is None:
        return None
    return {
        "metric": metric, "candidate": candidate[metric], "baseline": baseline[metric],
        "candidate_n": candidate["n"], "baseline_n": baseline["n"],
        "worse": candidate[metric] < baseline[metric] - limits["quality_margin"],
    }  # fmt: skip
