"""Reads about rollouts for the API and the admin: live split, per-arm figures, shadow agreement."""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
from django.utils import timezone

from serving import rollout_analysis
from serving.models import PredictionLog, Rollout
from serving.shadow import SUFFIX

SHADOW_PAIRS = 5000  # most recent mirrored requests compared


def live_figures(rollout: Rollout) -> dict[str, Any]:
    """Per-arm requests, error rate and p99 in the current stage window (or the whole rollout once it ended)."""
    since = rollout.stage_started_at if rollout.active and rollout.stage_started_at else rollout.created_at
    until = rollout.finished_at or timezone.now()
    figures = {}
    for arm in ("baseline", "candidate"):
        arm_figures = rollout_analysis.arm_figures(rollout, arm, since, until)
        figures[arm] = {k: arm_figures[k] for k in ("requests", "errors", "error_rate", "p99_ms")}
    total = figures["baseline"]["requests"] + figures["candidate"]["requests"]
    figures["observed_candidate_percent"] = 100 * figures["candidate"]["requests"] / total if total else None
    figures["target_candidate_percent"] = rollout.candidate_percent
    figures["window"] = {"since": since.isoformat(), "until": until.isoformat()}
    return figures


def shadow_comparison(rollout: Rollout) -> dict[str, Any]:
    """How often the shadow agreed with the answer production returned, and how their latencies compare.

    Latency: production's is the whole request inside the web process; the shadow's is its validation and model
    call alone (it skips routing, caching and batching), so read the ratio as an upper bound on the shadow's cost."""
    shadows = list(
        PredictionLog.objects.filter(route_reason=f"rollout:{rollout.pk}:shadow")
        .order_by("-id")
        .values_list("request_id", "outputs", "latency_ms", "created_at")[:SHADOW_PAIRS]
    )
    # A client may reuse a request id: a shadow pairs with the latest primary of its id logged no later than itself.
    times: dict[str, list[Any]] = {}
    primaries: dict[str, list[tuple[Any, float]]] = {}
    for request_id, at, outputs, latency in (
        PredictionLog.objects.filter(
            model_name=rollout.model.name, request_id__in={r[: -len(SUFFIX)] for r, *_ in shadows}
        )
        .order_by("created_at", "id")
        .values_list("request_id", "created_at", "outputs", "latency_ms")
    ):
        times.setdefault(request_id, []).append(at)
        primaries.setdefault(request_id, []).append((outputs, latency))
    agree = pairs = 0
    base_latency, cand_latency = [], []
    for shadow_id, shadow_outputs, shadow_latency, shadow_at in shadows:
        primary_id = shadow_id[: -len(SUFFIX)]
        theirs = (shadow_outputs or {}).get("predictions")
        if theirs is None or primary_id not in primaries:
            continue
        earlier = bisect.bisect_right(times[primary_id], shadow_at)
        outputs, latency = primaries[primary_id][max(earlier - 1, 0)]
        pairs += 1
        agree += theirs == (outputs or {}).get("predictions")
        base_latency.append(latency)
        cand_latency.append(shadow_latency)
    return {
        "pairs": pairs,
        "agreement": agree / pairs if pairs else None,
        "baseline_p50_ms": float(np.median(base_latency)) if base_latency else None,
        "candidate_p50_ms": float(np.median(cand_latency)) if cand_latency else None,
        "shadow_errors": PredictionLog.objects.filter(
            route_reason=f"rollout:{rollout.pk}:shadow", outcome="shadow-err"
        ).count(),
    }
