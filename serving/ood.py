"""Out-of-distribution scoring on the prediction path: how monitoring's per-version profiles plug into serving.

Serving knows no profile and never imports monitoring: monitoring registers a scorer source when it starts
(`AppConfig.ready`), version id -> a Scorer or None, and the prediction path asks it for each request's rows after
validation (a step its driver answers: the request processor scores a round's requests together). A source must
answer from memory (it may refresh itself now and then) and never raise: scoring must not make a prediction fail.
The verdict is logged with the prediction, counted, and, when the version's profile says so, refuses the request
(422, naming the features out of the reference's range).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
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


@dataclass(frozen=True, slots=True)
class OodScoring:
    """A step of a request asking its driver to score its rows with this scorer; the driver sends back the Verdict
    (None when the scorer failed). The request processor scores the rows of every request of a round that share a
    scorer in one call (score_all): the scorer's handful of numpy calls cost microseconds each, per call, not per
    row, so one call per round instead of one per request is what keeps scoring within a few percent of serving."""

    scorer: Scorer
    rows: list[list[Any]]
    label: str  # "model vN", for the log


def verdict_steps(
    version_id: int, model_name: str, version: int, rows: list[list[Any]]
) -> Generator[OodScoring, Verdict | None, Verdict | None]:
    """The rows' verdict (None: no profile, scoring is off, or the scorer failed), counted; raises OutOfDistribution
    for refused rows. Yields one OodScoring for its driver to answer."""
    if not settings.MODELWORKS_OOD_SCORING:
        return None
    scorer = scorer_for(version_id)
    if scorer is None:
        return None
    verdict = yield OodScoring(scorer, rows, f"{model_name} v{version}")
    if verdict is None:
        return None
    refused = verdict.refused_rows()
    if refused:
        metrics.OOD_ROWS.labels(model_name, str(version), "refused").inc(len(rows))
        raise OutOfDistribution([_refusal(i, verdict) for i in refused][:20], status=422)
    flagged = verdict.flagged  # the rows scored need no counter: modelworks_prediction_rows_total counts them
    if flagged:
        metrics.OOD_ROWS.labels(model_name, str(version), "flagged").inc(flagged)
    return verdict


def score_all(scorings: list[OodScoring]) -> list[Verdict | None]:
    """Each scoring's verdict; the rows of those sharing a scorer scored together, in one call. A row's score does not
    depend on the rows beside it (up to the last bit of a matrix product's summation, before the score's rounding to
    four decimals). A scorer that fails leaves its requests unscored: scoring never fails a prediction."""
    verdicts: list[Verdict | None] = [None] * len(scorings)
    groups: dict[int, list[int]] = {}
    for i, scoring in enumerate(scorings):
        groups.setdefault(id(scoring.scorer), []).append(i)
    for members in groups.values():
        first = scorings[members[0]]
        rows = first.rows if len(members) == 1 else [row for i in members for row in scorings[i].rows]
        try:
            together = first.scorer.score(rows)
        except Exception:  # noqa: BLE001 - a profile that cannot score these rows must not fail the prediction
            logger.warning("OOD scoring failed for %s; the rows are not scored", first.label, exc_info=True)
            continue
        if len(members) == 1:
            verdicts[members[0]] = together
            continue
        start = 0
        for i in members:
            end = start + len(scorings[i].rows)
            verdicts[i] = Verdict(together.scores[start:end], together.out_of_range[start:end], together.refuse_above)
            start = end
    return verdicts


def verdict_for(version_id: int, model_name: str, version: int, rows: list[list[Any]]) -> Verdict | None:
    """verdict_steps answered on this thread (one request's rows alone)."""
    steps = verdict_steps(version_id, model_name, version, rows)
    try:
        scoring = next(steps)
        steps.send(score_all([scoring])[0])
    except StopIteration as finished:
        return finished.value
    raise RuntimeError("verdict_steps asked twice")  # pragma: no cover - it yields once at most


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
