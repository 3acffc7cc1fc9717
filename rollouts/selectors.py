"""Reads about rollouts for the API and the admin: live split, per-arm figures (now and per stage), shadow agreement."""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
from django.db.models import Count
from django.utils import timezone

from rollouts import analysis as rollout_analysis
from rollouts.models import Rollout
from serving.models import Outcome, PredictionLog, logged_outputs
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
    # A finished rollout has no target now; its shares are judged per stage (stage_figures), each against its own.
    figures["target_candidate_percent"] = rollout.candidate_percent if rollout.active else None
    figures["window"] = {"since": since.isoformat(), "until": until.isoformat()}
    return figures


def stage_figures(rollout: Rollout) -> list[dict[str, Any]]:
    """Each stage a canary rollout entered, with the traffic its arms took while it held the split.

    A stage's window runs from its "stage.started" event to the next stage's (or the rollout's end, or now), pauses
    included: a paused rollout keeps its stage's split. The observed candidate share is read against that stage's
    target, so a finished rollout's history never reads against its final 0%."""
    if rollout.mode != Rollout.Mode.CANARY:
        return []
    starts = [(e.stage_index, e.created_at) for e in rollout.events.all() if e.action == "stage.started"]
    end = rollout.finished_at or timezone.now()
    reasons = {rollout.arm_reason("baseline"): "baseline", rollout.arm_reason("candidate"): "candidate"}
    stages = []
    for position, (index, since) in enumerate(starts):
        until = starts[position + 1][1] if position + 1 < len(starts) else end
        counts = {"baseline": 0, "candidate": 0}
        rows = (
            PredictionLog.objects.filter(route_reason__in=list(reasons), created_at__gte=since, created_at__lt=until)
            .exclude(outcome__in=Outcome.shadows())
            .values("route_reason")
            .annotate(n=Count("id"))
        )
        for row in rows:
            counts[reasons[row["route_reason"]]] = row["n"]
        total = counts["baseline"] + counts["candidate"]
        stages.append({
            "stage": index + 1,
            "target_candidate_percent": float(rollout.stages[index]),
            "baseline_requests": counts["baseline"],
            "candidate_requests": counts["candidate"],
            "observed_candidate_percent": 100 * counts["candidate"] / total if total else None,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "current": rollout.active and position == len(starts) - 1,
        })  # fmt: skip
    return stages


def shadow_comparison(rollout: Rollout) -> dict[str, Any]:
    """How often the shadow agreed with the answer production returned, and how their latencies compare.

    Latency: production's is the whole request inside the web process; the shadow's is its validation and model
    call alone (it skips routing, caching and batching), so read the ratio as an upper bound on the shadow's cost."""
    shadows = list(
        PredictionLog.objects.filter(route_reason=rollout.arm_reason("shadow"))
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
        theirs, _ = logged_outputs(shadow_outputs)
        if not theirs or primary_id not in primaries:
            continue
        earlier = bisect.bisect_right(times[primary_id], shadow_at)
        outputs, latency = primaries[primary_id][max(earlier - 1, 0)]
        pairs += 1
        agree += theirs == logged_outputs(outputs)[0]
        base_latency.append(latency)
        cand_latency.append(shadow_latency)
    return {
        "pairs": pairs,
        "agreement": agree / pairs if pairs else None,
        "baseline_p50_ms": float(np.median(base_latency)) if base_latency else None,
        "candidate_p50_ms": float(np.median(cand_latency)) if cand_latency else None,
        "shadow_errors": PredictionLog.objects.filter(
            route_reason=rollout.arm_reason("shadow"), outcome=Outcome.SHADOW_FAILED
        ).count(),
    }
