"""Multiple-testing corrections of per-feature p-values."""

from __future__ import annotations

import numpy as np


def bonferroni(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    return np.minimum(p * len(p), 1.0)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH adjusted p-values (step-up): min over j >= i of p_(j) * m / j, capped at 1, in the input order."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    result = np.empty(m)
    result[order] = np.minimum(adjusted, 1.0)
    return result


def adjust(p: np.ndarray, method: str) -> np.ndarray:
    if method == "bonferroni":
        return bonferroni(p)
    if method == "bh":
        return benjamini_hochberg(p)
    return np.asarray(p, dtype=float)
