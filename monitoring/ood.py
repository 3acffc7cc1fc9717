"""Out-of-distribution scores: a version's reference sample as a profile, and the scorer serving calls per request.

A row's score is the largest of:
- for each numeric feature outside the reference's [min, max]: 1 + how far outside, in units of that range's width;
- 2 for a categorical (or boolean) value the reference never holds;
- its Mahalanobis distance over the numeric features (standardised by the reference's mean and deviation, the
  correlation matrix regularised by RIDGE), divided by the largest distance of any reference row.
So every row of the reference itself scores at most 1, and a score above 1 flags a row as outside it. Nulls and
features tagged pii (stored hashed) are not scored.

The scorer is plugged into serving through serving/ood.py's hook (MonitoringConfig.ready): `scorer_source` answers
from this process's memory and re-reads a version's profile every MODELWORKS_OOD_PROFILE_TTL_S. It runs on the
prediction hot path, once per request for all of its rows (numpy, no per-value Python but for categories).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings

from serving.ood import Verdict
from serving.routing import PROCESSOR_THREAD, BackgroundReads

logger = logging.getLogger(__name__)

RIDGE = 1e-3  # added to the correlation matrix's diagonal: collinear features must not make distances explode
UNSEEN_CATEGORY_SCORE = 2.0
MAX_SCORE = 1e6  # an infinite value (nullable features accept one) must still be storable JSON
NUMERIC, CATEGORICAL = ("float", "int"), ("category", "bool")


def build_profile(signature: dict[str, Any], frame: pd.DataFrame) -> dict[str, Any]:
    """The profile of a reference sample (signature-named columns; others ignored)."""
    numeric, categories = [], []
    for index, feature in enumerate(signature["inputs"]):
        name = feature["name"]
        if feature.get("pii") or name not in frame.columns:
            continue
        column = frame[name].dropna()
        if column.empty:
            continue
        if feature["dtype"] in NUMERIC:
            values = pd.to_numeric(column, errors="coerce").dropna().astype(float)
            if not values.empty:
                numeric.append({"name": name, "index": index, "min": values.min(), "max": values.max()})
        else:
            categories.append({"name": name, "index": index, "values": sorted({_category(v) for v in column})})
    profile: dict[str, Any] = {"numeric": numeric, "categories": categories, "mahalanobis": None}
    spread = [f for f in numeric if f["max"] > f["min"]]
    if spread:
        X = np.asarray(frame[[f["name"] for f in spread]].apply(pd.to_numeric, errors="coerce"), dtype=float)
        mean, scale = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
        Z = np.nan_to_num((X - mean) / scale)
        precision = np.linalg.inv(Z.T @ Z / len(Z) + RIDGE * np.eye(Z.shape[1]))
        distances = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", Z, precision, Z), 0.0))
        profile["mahalanobis"] = {
            "indexes": [f["index"] for f in spread],
            "mean": mean.tolist(),
            "scale": scale.tolist(),
            "precision": precision.tolist(),
            "threshold": float(distances.max()) or 1.0,
        }
    for feature in numeric:
        feature["min"], feature["max"] = float(feature["min"]), float(feature["max"])
    return profile


def _category(value: Any) -> str:
    """Categories compared as text: a CSV gives back "3" and "True" for what a request sends as 3 and true."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


class ProfileScorer:
    """A profile's arrays, prepared once per process, scoring a request's rows together. Measured on the hot path
    (bench/ood.py): a row within every range costs a handful of numpy calls on one small matrix."""

    def __init__(self, profile: dict[str, Any], refuse_above: float | None = None) -> None:
        numeric = profile["numeric"]
        self.refuse_above = refuse_above
        indexes = [f["index"] for f in numeric]
        self._numbers = itemgetter(*indexes) if len(indexes) > 1 else (lambda row, i=indexes: [row[i[0]]])
        self._count = len(indexes)
        self._names = np.asarray([f["name"] for f in numeric], dtype=object)
        self._low = np.asarray([f["min"] for f in numeric], dtype=float)
        self._high = np.asarray([f["max"] for f in numeric], dtype=float)
        self._width = np.where(self._high > self._low, self._high - self._low, 1.0)
        self._categories = [(f["index"], f["name"], frozenset(f["values"])) for f in profile["categories"]]
        m = profile["mahalanobis"]
        self._mahalanobis = m is not None
        if m is not None:
            position = {index: i for i, index in enumerate(indexes)}
            self._m_columns = np.asarray([position[index] for index in m["indexes"]])
            self._all_columns = len(self._m_columns) == len(indexes)
            self._mean = np.asarray(m["mean"])
            # The standardisation and the reference's largest distance folded into one matrix: score^2 = d P d.
            inverse = 1.0 / np.asarray(m["scale"])
            self._folded = np.asarray(m["precision"]) * np.outer(inverse, inverse) / m["threshold"] ** 2

    def distances(self, X: np.ndarray) -> np.ndarray:
        """Mahalanobis distances of numeric rows (in profile order) over the reference's largest, nulls at its mean."""
        D = np.nan_to_num((X if self._all_columns else X[:, self._m_columns]) - self._mean)
        return np.sqrt(np.maximum(((D @ self._folded) * D).sum(axis=1), 0.0))

    def score(self, rows: list[list[Any]]) -> Verdict:
        names: list[list[str]] = [[] for _ in rows]
        scores: list[float] = [0.0] * len(rows)
        if self._count:
            X = np.array([self._numbers(row) for row in rows], dtype=float)  # None -> nan
            # The common case in as few numpy calls as may be (each costs microseconds on the hot path): every value
            # present and within its range. A null (nan) or a value outside takes the careful way below.
            if (np.clip(X, self._low, self._high) == X).all():
                if self._mahalanobis:
                    D = (X if self._all_columns else X[:, self._m_columns]) - self._mean
                    scores = [math.sqrt(max(q, 0.0)) for q in ((D @ self._folded) * D).sum(axis=1).tolist()]
            else:
                scores, names = self._outside(X)
        for index, name, known in self._categories:
            for r, row in enumerate(rows):
                value = row[index]
                if value is not None and _category(value) not in known:
                    names[r].append(name)
                    scores[r] = max(scores[r], UNSEEN_CATEGORY_SCORE)
        return Verdict([round(min(score, MAX_SCORE), 4) for score in scores], names, self.refuse_above)

    def _outside(self, X: np.ndarray) -> tuple[list[float], list[list[str]]]:
        """Scores and out-of-range features of rows with a null or a value outside its range."""
        scores = self.distances(X) if self._mahalanobis else np.zeros(len(X))
        out = (self._low > X) | (self._high < X)  # nan (a null) is never outside
        outside = np.where(out, 1.0 + np.fmax(self._low - X, X - self._high) / self._width, 0.0)
        scores = np.fmax(scores, outside.max(axis=1))
        scores = np.nan_to_num(scores, nan=0.0, posinf=MAX_SCORE)  # an infinite value (nullable features take one)
        return scores.tolist(), [list(self._names[flags]) for flags in out]


# ------------------------------------------------------------------------------------ the source serving asks

_scorers: dict[int, tuple[float, ProfileScorer | None]] = {}
# The request processor's reads go to a thread of their own (as routes do): the processor never waits on the
# database but for a version it has never scored, and then at most COLD_WAIT_SECONDS.
_reads = BackgroundReads("ood-profile-read", queue_behind_stuck=False)
COLD_WAIT_SECONDS = 1.0


def scorer_source(version_id: int) -> ProfileScorer | None:
    """The version's scorer from this process's memory, its profile re-read every MODELWORKS_OOD_PROFILE_TTL_S.
    Never raises: a profile that cannot be read now leaves the last one in use (or none)."""
    now = time.monotonic()
    held = _scorers.get(version_id)
    if held is not None and held[0] > now:
        return held[1]
    if threading.current_thread().name != PROCESSOR_THREAD:
        return _load(version_id)  # Django's threads, one request each, read inline
    try:  # a refresh waits for nothing (the last profile serves meanwhile); a first read waits a little
        return _reads.read(version_id, lambda: _load(version_id), 0.0 if held else COLD_WAIT_SECONDS, now=now)
    except Exception:  # noqa: BLE001 - not read yet: the read goes on, and stores what it finds
        return held[1] if held is not None else None


def _load(version_id: int) -> ProfileScorer | None:
    from monitoring.models import OodProfile

    held = _scorers.get(version_id)
    scorer = held[1] if held is not None else None
    try:
        row = OodProfile.objects.filter(version_id=version_id).values_list("profile", "refuse_above").first()
        scorer = None if row is None else ProfileScorer(*row)
    except Exception:  # noqa: BLE001 - the database away: predictions go on, scored by what was known (tried again
        # after the TTL, not on every request)
        logger.warning("could not read the OOD profile of version id %s", version_id, exc_info=True)
    _scorers[version_id] = (time.monotonic() + settings.MODELWORKS_OOD_PROFILE_TTL_S, scorer)
    return scorer


def forget(version_id: int | None = None) -> None:
    """Drop this process's scorer of a version (all, with None): the next request reads the profile again."""
    if version_id is None:
        _scorers.clear()
    else:
        _scorers.pop(version_id, None)
