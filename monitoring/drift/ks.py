"""Two-sample Kolmogorov-Smirnov, two-sided, with scipy.stats.ks_2samp's own rules (method="auto").

The statistic comes from samples sorted once (columns of equal size at a time); the p-value follows ks_2samp:
exact when both samples have at most 10,000 values (the statistic then rounded to the lattice h/lcm as ks_2samp
does; the exact distribution is computed in monitoring.drift.ks_exact, not by scipy's private helper), otherwise
Smirnov's asymptotic distribution scipy.stats.kstwo at round(n1*n2/(n1+n2)), vectorised, except that p-values
provably below 1e-12 are given as that proof's bound (see ks_pvalues).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from monitoring.drift.ks_exact import ks_2samp_exact_sf, lattice_statistic

MAX_EXACT_N = 10_000  # ks_2samp's MAX_AUTO_N
TINY_P = 1e-12


def ks_statistics(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> np.ndarray:
    """max |F_ref - F_cur| per row of two row-sorted blocks (features x values; ECDFs are right-continuous)."""
    n1, n2 = ref_sorted.shape[1], cur_sorted.shape[1]
    ranks1, ranks2 = np.arange(1, n1 + 1) / n1, np.arange(1, n2 + 1) / n2
    result = np.empty(ref_sorted.shape[0])
    for j in range(ref_sorted.shape[0]):
        r, c = ref_sorted[j], cur_sorted[j]
        # Evaluate at the last element of each tie group only: there (i+1)/n is the ECDF's true value.
        r_last = np.append(r[1:] != r[:-1], True)
        c_last = np.append(c[1:] != c[:-1], True)
        at_r = ranks1[r_last] - np.searchsorted(c, r[r_last], "right") / n2
        at_c = np.searchsorted(r, c[c_last], "right") / n1 - ranks2[c_last]
        result[j] = max(np.abs(at_r).max(), np.abs(at_c).max())
    return result


def ks_pvalues(d: np.ndarray, n1: int, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, p-value) per column as ks_2samp(method="auto", alternative="two-sided") answers them."""
    d = np.asarray(d, dtype=float).copy()
    p = np.full(d.shape, np.nan)
    if max(n1, n2) <= MAX_EXACT_N:
        # Unlike scipy's helper, which can overflow and then fall back to the asymptotic value, this never fails.
        for j, value in enumerate(d):
            h, d[j] = lattice_statistic(n1, n2, float(value))
            p[j] = ks_2samp_exact_sf(n1, n2, h)
        return d, np.clip(p, 0, 1)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    effective_n = np.round(m * n / (m + n))
    # Massart's bound P(D_N > d) <= 2 exp(-2 N d^2) holds for every N and d. Where it is below TINY_P the exact
    # value (whose computation costs ~40 ms per feature at N = 50,000) is below it too: store the bound, which is
    # within TINY_P of scipy's value and can never flip a verdict. Everywhere else: scipy's kstwo, as ks_2samp.
    bound = 2 * np.exp(-2 * effective_n * d**2)
    tiny = bound < TINY_P
    p[tiny] = bound[tiny]
    rest = ~tiny
    p[rest] = stats.kstwo.sf(d[rest], effective_n)
    return d, np.clip(p, 0, 1)
