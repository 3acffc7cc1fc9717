"""Numeric drift for a block of features with the same sample sizes, from samples sorted once per feature.

Blocks are laid out features x values (one contiguous sorted row per feature): binary searches on contiguous rows
are several times faster than on strided columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitoring.drift.ks import ks_pvalues, ks_statistics

PSI_BINS = 10
HISTOGRAM_BINS = 20
# An empty bin would make PSI infinite; its share is floored to this (Evidently floors the same way).
PSI_FLOOR = 1e-4


@dataclass
class NumericResult:
    ks_statistic: np.ndarray
    p_value: np.ndarray
    wasserstein: np.ndarray
    wasserstein_norm: np.ndarray  # divided by the reference's standard deviation (Evidently's normalisation)
    psi: np.ndarray
    histograms: list[dict]


def psi_from_shares(ref_share: np.ndarray, cur_share: np.ndarray) -> np.ndarray:
    """Population stability index per column of (bins x columns) share tables: sum (c - r) * ln(c / r)."""
    r = np.maximum(ref_share, PSI_FLOOR)
    c = np.maximum(cur_share, PSI_FLOOR)
    return ((c - r) * np.log(c / r)).sum(axis=0)


def wasserstein(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> np.ndarray:
    """W1 = integral over t in (0, 1] of |Q_ref(t) - Q_cur(t)|, on the merged grid of both quantile steps.

    The grid (steps i*n2 and j*n1 in units of 1/(n1*n2)) is exact integers and the same for every feature, so one
    gather serves the whole block; equal to scipy.stats.wasserstein_distance.
    """
    n1, n2 = ref_sorted.shape[1], cur_sorted.shape[1]
    if n1 == n2:  # the grid is then i/n: the mean distance between order statistics
        return np.abs(ref_sorted - cur_sorted).mean(axis=1)
    grid = np.union1d(np.arange(1, n1 + 1, dtype=np.int64) * n2, np.arange(1, n2 + 1, dtype=np.int64) * n1)
    weights = np.diff(grid, prepend=0) / (n1 * n2)
    ref_index, cur_index = (grid + n2 - 1) // n2 - 1, (grid + n1 - 1) // n1 - 1
    pairs = zip(ref_sorted, cur_sorted, strict=True)
    return np.array([weights @ np.abs(r[ref_index] - c[cur_index]) for r, c in pairs])


def _quantile_edges(ref_sorted: np.ndarray, bins: int) -> np.ndarray:
    """Interior bin edges at the reference's quantiles k/bins, by np.quantile itself: shape (features, bins - 1).

    np.quantile's linear rule returns a tie value exactly when both neighbours equal it; a hand-written
    a*(1-f) + b*f can land one ulp below, and a right-closed bin then moves the whole tie group (issue 19).
    """
    return np.quantile(ref_sorted, np.arange(1, bins) / bins, axis=1).T


def _shares(sorted_block: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of each feature in the bins (-inf, e1], (e1, e2], ..., (e_last, inf): shape (bins, features)."""
    n = sorted_block.shape[1]
    pairs = zip(sorted_block, edges, strict=True)
    counts = np.array([np.diff(np.searchsorted(row, e, "right"), prepend=0, append=n) for row, e in pairs])
    return counts.T / n


def _histograms(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> list[dict]:
    """Equal-width bins over both samples' range, as shares, for the report's plots."""
    low = np.minimum(ref_sorted[:, 0], cur_sorted[:, 0])
    high = np.maximum(ref_sorted[:, -1], cur_sorted[:, -1])
    result = []
    for j in range(ref_sorted.shape[0]):
        edges = np.linspace(low[j], high[j], HISTOGRAM_BINS + 1) if high[j] > low[j] else np.array([low[j], low[j]])
        inner = edges[1:-1]
        ref = np.diff(np.searchsorted(ref_sorted[j], inner, "left"), prepend=0, append=ref_sorted.shape[1])
        cur = np.diff(np.searchsorted(cur_sorted[j], inner, "left"), prepend=0, append=cur_sorted.shape[1])
        result.append(
            {
                "edges": [float(e) for e in edges],
                "reference": [round(float(v), 6) for v in ref / ref_sorted.shape[1]],
                "current": [round(float(v), 6) for v in cur / cur_sorted.shape[1]],
            }
        )
    return result


def numeric_drift(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> NumericResult:
    """All numeric statistics; rows are features, each sorted ascending without missing values."""
    n1, n2 = ref_sorted.shape[1], cur_sorted.shape[1]
    statistic, p_value = ks_pvalues(ks_statistics(ref_sorted, cur_sorted), n1, n2)
    distance = wasserstein(ref_sorted, cur_sorted)
    scale = ref_sorted.std(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.where(scale > 0, distance / scale, np.where(distance > 0, np.inf, 0.0))
    edges = _quantile_edges(ref_sorted, PSI_BINS)
    psi = psi_from_shares(_shares(ref_sorted, edges), _shares(cur_sorted, edges))
    return NumericResult(statistic, p_value, distance, normalised, psi, _histograms(ref_sorted, cur_sorted))
