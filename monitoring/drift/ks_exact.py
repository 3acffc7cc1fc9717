"""The exact null distribution of the two-sample, two-sided Kolmogorov-Smirnov statistic (no ties).

Under the null every ordering of the pooled samples is equally likely: the merged sample is a lattice path from
(0, 0) to (n1, n2), one step right per value of the first sample and one step up per value of the second, uniform
over the C(n1 + n2, n1) paths. At (x, y) the ECDFs differ by x/n1 - y/n2 = g (b x - a y) / (n1 n2) with
g = gcd(n1, n2), a = n1 / g, b = n2 / g, so D >= h / lcm(n1, n2) exactly when the path reaches a point with
|b x - a y| >= h (Hodges 1958; the same lattice as scipy.stats.ks_2samp's exact mode, computed here independently).

The paths are counted one column at a time (one cumsum each), only those that have not yet left the band
|b x - a y| < h; each one that steps out is weighted by its number of completions and added up as it leaves, so
p = P(D >= d) is a sum of positive terms and small p-values keep their relative precision (about 1e-10, from the
log-binomials) instead of being 1 minus the inside share. Counts are rescaled as they grow: nothing overflows.
Equal sizes take the reflection formula instead (_square).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special


def lattice_statistic(n1: int, n2: int, d: float) -> tuple[int, float]:
    """(h, h / lcm): the statistic snapped to its lattice, as ks_2samp's exact mode does before its p-value."""
    lcm = (n1 // math.gcd(n1, n2)) * n2
    h = int(np.round(d * lcm))
    return h, h / lcm


def ks_2samp_exact_sf(n1: int, n2: int, h: int) -> float:
    """P(D >= h / lcm(n1, n2)) for two independent samples of sizes n1, n2 from one continuous distribution."""
    if n1 < 1 or n2 < 1:
        raise ValueError("both samples need at least one value")
    if h <= 0:
        return 1.0
    if n1 == n2:
        return _square(n1, h)
    return _rectangle(min(n1, n2), max(n1, n2), h)


def _rectangle(m: int, n: int, h: int) -> float:
    """The lattice (0, 0) -> (m, n), m < n, one column per value of the smaller sample.

    In column x the band is a_n x - h < a_m y < a_n x + h (a_m = m / g, a_n = n / g). A path inside the band at
    (x, y) came from (x - 1, y) or (x, y - 1), so the column's counts are a running sum of the previous column's
    from the band's bottom up: one cumsum per column. A path leaves the band either by a step right below the new
    bottom (every previous count under it) or by a step up from the column's top; each leaver is weighted by its
    C(remaining steps, remaining right steps) completions out of C(m + n, m) and added to the p-value.
    """
    g = math.gcd(m, n)
    a_m, a_n = m // g, n // g
    if h > a_m * n:  # beyond the largest possible |a_n x - a_m y| (a_m n, at (0, n) and at (m, 0))
        return 0.0
    lg = math.lgamma
    log_all = lg(m + n + 1) - lg(m + 1) - lg(n + 1)
    # counts[y]: paths to (x, y) that never left the band, divided by e^log_scale (rescaled as they grow).
    counts = np.zeros(n + 2)
    lo, hi = 0, min(-(-h // a_m) - 1, n)  # column 0's band, inclusive
    counts[lo : hi + 1] = 1.0
    log_scale = 0.0
    p = 0.0
    if hi < n:  # up out of column 0
        p += math.exp(lg(m + n - hi) - lg(m + 1) - lg(n - hi) - log_all)
    for x in range(1, m + 1):
        new_lo = max((a_n * x - h) // a_m + 1, 0)
        new_hi = min(-(-(a_n * x + h) // a_m) - 1, n)
        rest = m - x  # right steps still to come after this column
        stop = min(new_lo, hi + 1)  # right steps from y in [lo, stop) land below the band
        if stop == lo + 1:  # the usual case: the bottom rises by at most one point per column
            if counts[lo] > 0:
                log_paths = math.log(counts[lo]) + log_scale
                p += math.exp(log_paths + lg(rest + n - lo + 1) - lg(rest + 1) - lg(n - lo + 1) - log_all)
        elif stop > lo:
            ys = np.arange(lo, stop)
            logs = special.gammaln(rest + n - ys + 1) - special.gammaln(n - ys + 1) - (lg(rest + 1) + log_all)
            with np.errstate(divide="ignore"):  # log(0) for points no path reached: exp(-inf) = 0
                p += float(np.exp(np.log(counts[lo:stop]) + log_scale + logs).sum())
        if new_hi < new_lo:  # the band has closed: every path has left it
            return min(1.0, p)
        np.cumsum(counts[new_lo : hi + 1], out=counts[new_lo : hi + 1])
        if new_hi > hi:  # above the previous band nothing comes from the left: the sum carries on unchanged
            counts[hi + 1 : new_hi + 1] = counts[hi]
        lo, hi = new_lo, new_hi
        top = float(counts[hi])
        if top > 1e200:
            counts[lo : hi + 1] /= top
            log_scale += math.log(top)
            top = 1.0
        if hi < n and top > 0:  # up out of this column's top
            p += math.exp(math.log(top) + log_scale + lg(rest + n - hi) - lg(rest + 1) - lg(n - hi) - log_all)
    return min(1.0, p)


def _square(n: int, h: int) -> float:
    """n1 == n2 == n, D >= h / n: by reflection 2 sum_k>=1 (-1)^(k+1) C(2n, n - k h) / C(2n, n) (Gnedenko-Korolyuk).

    That alternating sum cancels; with A_k = C(2n, n - k h) / C(2n, n - (k - 1) h), a product of h ratios each below
    one, it is evaluated nested, 2 A_1 (1 - A_2 (1 - A_3 (...))).
    """
    if h > n:
        return 0.0
    result = 0.0
    for k in range(n // h, 0, -1):
        # C(2n, n - k h) / C(2n, n - (k - 1) h) = prod_{j<h} (n - k h + 1 + j) / (n + (k - 1) h + 1 + j)
        ratio = 1.0
        for j in range(h):
            ratio *= (n - k * h + 1 + j) / (n + (k - 1) * h + 1 + j)
        result = ratio * (1.0 - result)
    return min(1.0, 2.0 * result)
