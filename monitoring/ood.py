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
import time
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings

from serving.ood import Verdict

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
    """A profile's arrays, prepared once per process, scoring a request's rows together."""

    def __init__(self, profile: dict[str, Any], refuse_above: float | None = None) -> None:
        numeric = profile["numeric"]
        self.refuse_above = refuse_above
        self._indexes = [f["index"] for f in numeric]
        self._names = np.asarray([f["name"] for f in numeric], dtype=object)
        self._low = np.asarray([f["min"] for f in numeric], dtype=float)
        self._high = np.asarray([f["max"] for f in numeric], dtype=float)
        self._width = np.where(self._high > self._low, self._high - self._low, 1.0)
        self._categories = [(f["index"], f["name"], frozenset(f["values"])) for f in profile["categories"]]
        m = profile["mahalanobis"]
        if m is not None:
            position = {index: i for i, index in enumerate(self._indexes)}
            self._m_columns = [position[index] for index in m["indexes"]]
            self._mean, self._scale = np.asarray(m["mean"]), np.asarray(m["scale"])
            self._precision, self._threshold = np.asarray(m["precision"]), m["threshold"]
        self._mahalanobis = m is not None

    def distances(self, X: np.ndarray) -> np.ndarray:
        """Mahalanobis distances of numeric rows (in profile order), nulls at the reference's mean."""
        Z = np.nan_to_num((X[:, self._m_columns] - self._mean) / self._scale)
        return np.sqrt(np.maximum(((Z @ self._precision) * Z).sum(axis=1), 0.0))

    def score(self, rows: list[list[Any]]) -> Verdict:
        indexes = self._indexes
        X = np.array([[row[i] for i in indexes] for row in rows], dtype=float)  # None -> nan
        outside = np.fmax(self._low - X, X - self._high) / self._width  # nan for a null: never outside
        out = outside > 0
        scores = np.where(out, 1.0 + outside, 0.0).max(axis=1, initial=0.0)
        if self._mahalanobis:
            scores = np.fmax(scores, self.distances(X) / self._threshold)
        names: list[list[str]] = [list(self._names[flags]) for flags in out] if out.any() else [[] for _ in rows]
        for index, name, known in self._categories:
            for r, row in enumerate(rows):
                value = row[index]
                if value is not None and _category(value) not in known:
                    names[r].append(name)
                    scores[r] = max(scores[r], UNSEEN_CATEGORY_SCORE)
        scores = np.round(np.minimum(np.nan_to_num(scores, nan=0.0, posinf=MAX_SCORE), MAX_SCORE), 4)
        return Verdict(scores.tolist(), names, self.refuse_above)


# ------------------------------------------------------------------------------------ the source serving asks

_scorers: dict[int, tuple[float, ProfileScorer | None]] = {}


def scorer_source(version_id: int) -> ProfileScorer | None:
    """The version's scorer from this process's memory, its profile re-read every MODELWORKS_OOD_PROFILE_TTL_S.
    Never raises: a profile that cannot be read now leaves the last one in use (or none)."""
    now = time.monotonic()
    held = _scorers.get(version_id)
    if held is not None and held[0] > now:
        return held[1]
    from monitoring.models import OodProfile

    scorer = held[1] if held is not None else None
    try:
        row = OodProfile.objects.filter(version_id=version_id).values_list("profile", "refuse_above").first()
        scorer = None if row is None else ProfileScorer(*row)
    except Exception:  # noqa: BLE001 - the database away: predictions go on, scored by what was known
        logger.warning("could not read the OOD profile of version id %s", version_id, exc_info=True)
    _scorers[version_id] = (now + settings.MODELWORKS_OOD_PROFILE_TTL_S, scorer)
    return scorer


def forget(version_id: int | None = None) -> None:
    """Drop this process's scorer of a version (all, with None): the next request reads the profile again."""
    if version_id is None:
        _scorers.clear()
    else:
        _scorers.pop(version_id, None)
