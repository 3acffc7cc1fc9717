"""One drift run over a reference and a current frame: per-feature tests, correction, verdicts, dataset drift."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from monitoring.drift.categorical import categorical_drift
from monitoring.drift.corrections import adjust
from monitoring.drift.numeric import numeric_drift

NUMERIC, CATEGORICAL = "numeric", "categorical"


@dataclass(frozen=True)
class DriftOptions:
    p_threshold: float = 0.05
    correction: str = "none"  # "none", "bonferroni" or "bh"
    dataset_drift_share: float = 0.5
    min_wasserstein: float | None = None  # normalised by the reference's standard deviation; numeric features
    min_psi: float | None = None


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _rows(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Features as contiguous rows of float64 (None and non-numbers become NaN)."""
    return np.array([pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float) for name in names])


def sorted_rows(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """The numeric features as rows sorted ascending (NaN last): what the statistics start from."""
    return np.sort(_rows(frame, names), axis=1)


def _numeric_features(
    reference: pd.DataFrame, current: pd.DataFrame, names: list[str], ref_sorted: np.ndarray | None
) -> dict[str, dict]:
    """Columns sorted once each; columns with the same non-missing counts are computed together."""
    if not names:
        return {}
    if ref_sorted is None:
        ref_sorted = sorted_rows(reference, names)
    cur_sorted = np.sort(_rows(current, names), axis=1)
    ref_valid = (~np.isnan(ref_sorted)).sum(axis=1)
    cur_valid = (~np.isnan(cur_sorted)).sum(axis=1)
    blocks: dict[tuple[int, int], list[int]] = defaultdict(list)
    for j in range(len(names)):
        blocks[(int(ref_valid[j]), int(cur_valid[j]))].append(j)
    results: dict[str, dict] = {}
    for (n1, n2), columns in blocks.items():
        if n1 == 0 or n2 == 0:
            for j in columns:
                results[names[j]] = {"kind": NUMERIC, "skipped": "no values in the reference or current window"}
            continue
        result = numeric_drift(ref_sorted[columns, :n1], cur_sorted[columns, :n2])
        for i, j in enumerate(columns):
            results[names[j]] = {
                "kind": NUMERIC,
                "test": "ks",
                "statistic": float(result.ks_statistic[i]),
                "p_value": float(result.p_value[i]),
                "wasserstein": float(result.wasserstein[i]),
                "wasserstein_norm": _finite(result.wasserstein_norm[i]),
                "psi": float(result.psi[i]),
                "reference_rows": n1,
                "current_rows": n2,
                "histogram": result.histograms[i],
            }
    return results


def _categorical_feature(reference: pd.Series, current: pd.Series) -> dict:
    ref, cur = reference.dropna().tolist(), current.dropna().tolist()
    if not ref or not cur:
        return {"kind": CATEGORICAL, "skipped": "no values in the reference or current window"}
    result = categorical_drift(ref, cur)
    return {
        "kind": CATEGORICAL,
        "test": "chi2",
        "statistic": result.chi2,
        "p_value": result.p_value,
        "dof": result.dof,
        "psi": result.psi,
        "unseen": result.unseen[:20],
        "unseen_count": len(result.unseen),
        "unseen_share": result.unseen_share,
        "reference_rows": len(ref),
        "current_rows": len(cur),
        "histogram": result.histogram,
    }


def _effect_large_enough(feature: dict, options: DriftOptions) -> bool:
    if options.min_psi is not None and feature["psi"] < options.min_psi:
        return False
    if feature["kind"] == NUMERIC and options.min_wasserstein is not None:
        norm = feature["wasserstein_norm"]
        return norm is None or norm >= options.min_wasserstein  # None: constant reference, any shift is large
    return True


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: dict[str, str],
    options: DriftOptions | None = None,
    progress: Callable[[int], None] | None = None,
    reference_sorted: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per feature (in `kinds` order) test, statistic, p-value, effect sizes, verdict; then the dataset verdict.

    `reference_sorted`: `sorted_rows(reference, numeric names in kinds order)` when the caller keeps it (a stored
    reference is sorted once per process, not once per run).
    """
    options = options or DriftOptions()
    numeric = [name for name, kind in kinds.items() if kind == NUMERIC]
    results = _numeric_features(reference, current, numeric, reference_sorted)
    if progress:
        progress(len(numeric))
    for name, kind in kinds.items():
        if kind == CATEGORICAL:
            results[name] = _categorical_feature(reference[name], current[name])
            if progress:
                progress(1)
    features = [{"name": name, **results[name]} for name in kinds]
    tested = [f for f in features if "skipped" not in f]
    adjusted = adjust(np.array([f["p_value"] for f in tested]), options.correction)
    for feature, p_adjusted in zip(tested, adjusted, strict=True):
        feature["p_adjusted"] = float(p_adjusted)
        feature["significant"] = bool(p_adjusted < options.p_threshold)
        feature["drifted"] = feature["significant"] and _effect_large_enough(feature, options)
    for feature in features:
        if "skipped" in feature:
            feature["drifted"] = False
        if "current_rows" in feature:
            feature["missing_share_current"] = 1 - feature["current_rows"] / max(len(current), 1)
    drifted = sum(f["drifted"] for f in tested)
    share = drifted / len(tested) if tested else 0.0
    return {
        "features": features,
        "tested": len(tested),
        "drifted": drifted,
        "share": share,
        "dataset_drift": bool(tested) and share >= options.dataset_drift_share,
    }
