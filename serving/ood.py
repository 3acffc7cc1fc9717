"""Out-of-distribution scoring on the prediction path: how monitoring's per-version profiles plug into serving.

Serving knows no profile and never imports monitoring: monitoring registers a scorer source when it starts
(`AppConfig.ready`), version id -> a Scorer or None, and the prediction path asks it for each request's rows after
validation. A source must answer from memory (it may refresh itself now and then) and never raise: scoring must
not make a prediction fail. The verdict is logged with the prediction, counted, and, when the version's profile
says so, refuses the request (422, naming the features out of the reference's range).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

from serving import metrics
from serving.validation import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Per row: its score (above 1: outside the reference) and the features outside its ranges or categories."""

    scores: list[float]
    out_of_range: list[list[str]]
    refuse_above: float | None = None  # the profile's refusal threshold, when it refuses

    @property
    def flagged(self) -> int:
        return sum(score > 1.0 for score in self.scores)

    def refused_rows(self) -> list[int]:
        limit = self.refuse_above
        return [] if limit is None else [i for i, score in enumerate(self.scores) if score > limit]


class Scorer(Protocol):
    def score(self, rows: list[list[Any]]) -> Verdict: ...


ScorerSource = Callable[[int], Scorer | None]

_sources: list[ScorerSource] = []


def register_scorer_source(source: ScorerSource) -> None:
    if source not in _sources:
        _sources.append(source)


def scorer_for(version_id: int) -> Scorer | None:
    for source in _sources:
        scorer = source(version_id)
        if scorer is not None:
            return scorer
    return None


class OutOfDistribution(InputError):
    """Rows scored above the profile's refusal threshold: a 422 naming what lies outside the reference."""

    detail = "rows lie outside the version's reference data"


def verdict_for(version_id: int, model_name: str, version: int, rows: list[list[Any]]) -> Verdict | None:
    """The rows' verdict (None: no profile, or scoring is off), counted; raises OutOfDistribution for refused rows."""
    if not settings.MODELWORKS_OOD_SCORING:
        return None
    scorer = scorer_for(version_id)
    if scorer is None:
        return None
    try:
        verdict = scorer.score(rows)
    except Exception:  # noqa: BLE001 - a profile that cannot score these rows must not fail the prediction
        logger.warning("OOD scoring failed for %s v%s; the rows are not scored", model_name, version, exc_info=True)
        return None
    refused = verdict.refused_rows()
    if refused:
        metrics.OOD_ROWS.labels(model_name, str(version), "refused").inc(len(rows))
        raise OutOfDistribution([_refusal(i, verdict) for i in refused][:20], status=422)
    flagged = verdict.flagged  # the rows scored need no counter: modelworks_prediction_rows_total counts them
    if flagged:
        metrics.OOD_ROWS.labels(model_name, str(version), "flagged").inc(flagged)
    return verdict


def _refusal(row: int, verdict: Verdict) -> dict[str, Any]:
    names = verdict.out_of_range[row]
    score = verdict.scores[row]
    if names:
        message = f"outside the reference's range or categories (OOD score {score:.3g} > {verdict.refuse_above:g})"
        return {"row": row, "field": ",".join(names), "features": names, "message": message}
    message = (
        f"an unusual combination of values: OOD score {score:.3g} > {verdict.refuse_above:g}, though each "
        "feature lies within the reference's range"
    )
    return {"row": row, "field": None, "features": [], "message": message}
