"""Categorical drift: chi-square on the 2 x k table of category counts (as scipy.stats.chi2_contingency), and PSI."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from monitoring.drift.numeric import psi_from_shares

HISTOGRAM_CATEGORIES = 30


@dataclass
class CategoricalResult:
    chi2: float
    p_value: float
    dof: int
    psi: float
    unseen: list[Any]  # categories in the current window the reference never had
    unseen_share: float
    histogram: dict


def chi2_contingency_2xk(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float, int]:
    """Pearson's chi-square of the 2 x k table, with Yates' correction when dof == 1 (chi2_contingency's default).

    Categories absent from both samples are not in the table. A category only the current window has is a column
    whose reference count is 0: its expected count is still positive, so it weighs in the test (unseen is drift).
    """
    observed = np.vstack([ref_counts, cur_counts]).astype(float)
    k = observed.shape[1]
    if k < 2:
        return 0.0, 1.0, 0
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0, keepdims=True) / observed.sum()
    dof = k - 1
    if dof == 1:
        diff = expected - observed
        observed = observed + np.minimum(0.5, np.abs(diff)) * np.sign(diff)
    statistic = float(((observed - expected) ** 2 / expected).sum())
    return statistic, float(stats.chi2.sf(statistic, dof)), dof


def categorical_drift(reference: list[Any], current: list[Any]) -> CategoricalResult:
    """Values without missing ones; labels compared as given (1 and "1" are different categories)."""
    ref_counter, cur_counter = Counter(reference), Counter(current)
    categories = sorted(set(ref_counter) | set(cur_counter), key=lambda c: (-ref_counter[c] - cur_counter[c], repr(c)))
    ref_counts = np.array([ref_counter[c] for c in categories], dtype=float)
    cur_counts = np.array([cur_counter[c] for c in categories], dtype=float)
    statistic, p_value, dof = chi2_contingency_2xk(ref_counts, cur_counts)
    ref_share, cur_share = ref_counts / max(len(reference), 1), cur_counts / max(len(current), 1)
    psi = float(psi_from_shares(ref_share[:, None], cur_share[:, None])[0])
    unseen = [c for c in categories if ref_counter[c] == 0]
    shown = categories[:HISTOGRAM_CATEGORIES]
    histogram = {
        "categories": [_label(c) for c in shown],
        "reference": [round(float(v), 6) for v in ref_share[: len(shown)]],
        "current": [round(float(v), 6) for v in cur_share[: len(shown)]],
        "other_categories": max(len(categories) - len(shown), 0),
    }
    return CategoricalResult(
        chi2=statistic,
        p_value=p_value,
        dof=dof,
        psi=psi,
        unseen=[_label(c) for c in unseen],
        unseen_share=float(sum(cur_counter[c] for c in unseen) / max(len(current), 1)),
        histogram=histogram,
    )


def _label(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
