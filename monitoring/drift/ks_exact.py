"""The exact null distribution of the two-sample, two-sided Kolmogorov-Smirnov statistic (no ties).

Under the null every ordering of the pooled samples is equally likely: the merged sample is a lattice path from
(0, 0) to (n1, n2), one step right per value of the first sample and one step up per value of the second, uniform
over the C(n1 + n2, n1) paths. At (x, y) the ECDFs differ by x/n1 - y/n2 = g (b x - a y) / (n1 n2) with
g = gcd(n1, n2), a = n1 / g, b = n2 / g, so D >= h / lcm(n1, n2) exactly when the path reaches a point with
|b x - a y| >= h (Hodges 1958; the same lattice as scipy.stats.ks_2samp's exact mode, computed here independently).

The paths are counted one anti-diagonal (x + y = t) at a time, only those that have not yet left the band
|b x - a y| < h; each one that steps out is weighted by its number of completions and added up as it leaves, so
p = P(D >= d) is a sum of positive terms and small p-values keep their relative precision (about 1e-10, from the
log-binomials) instead of being 1 minus the inside share. Counts are rescaled as they grow: nothing overflows.
"""

from __future__ import annotations

import math

import numpy as np


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
    m, n = max(n1, n2), min(n1, n2)  # symmetric in n1, n2; x runs over the larger sample
    g = math.gcd(m, n)
    a, b = m // g, n // g
    if h > a * n:  # beyond the largest possible |b x - a y| (a n, at (0, n) and at (m, 0))
        return 0.0
    # Diagonal t holds the points (x, t - x); |b x - a (t - x)| < h <=> a t - h < (a + b) x < a t + h.
    # counts[x] is the number of paths to (x, t - x) that stayed in the band, divided by e^log_scale; Pascal's rule
    # moves it to the next diagonal in one vector add. A path that steps out at (x, y) is completed by any of
    # C(m + n - x - y, m - x) paths of the C(m + n, m): that share of the paths is added to the p-value.
    total = m + n
    log_all = _log_binom(total, m)
    # Two buffers, this diagonal's counts and the next's, indexed x + 1 so that x - 1 = -1 reads a zero; both are zero
    # outside the band.
    counts, following = np.zeros(m + 3), np.zeros(m + 3)
    counts[1] = 1.0
    log_scale = 0.0
    lo, hi = 0, 0  # the band's x range on the current diagonal (inclusive)
    p = 0.0
    for t in range(1, total + 1):
        # Pascal's rule onto candidates lo .. hi + 1: old[x - 1] + old[x]; following[lo] (x = lo - 1) is stale from two
        # diagonals ago and is cleared.
        np.add(counts[lo : hi + 2], counts[lo + 1 : hi + 3], out=following[lo + 1 : hi + 3])
        following[lo] = 0.0
        counts, following = following, counts
        hi += 1
        new_lo = max((a * t - h) // (a + b) + 1, 0, t - n)
        new_hi = min(-(-(a * t + h) // (a + b)) - 1, m, t)
        # The band moves by less than one point per diagonal: at most one candidate leaves on each side. Candidates
        # off the lattice (x > m or y > n) are dropped, not counted as leaving.
        for x in (*range(lo, min(new_lo, hi + 1)), *range(max(new_hi + 1, new_lo, lo), hi + 1)):
            if x <= m and t - x <= n:
                p += _share(float(counts[x + 1]), log_scale, total - t, m - x, log_all)
            counts[x + 1] = 0.0
        if new_hi < new_lo:  # no path stays in the band: each one has stepped out once
            return min(1.0, p)
        lo, hi = new_lo, new_hi
        if t % 256 == 0:  # counts grow at most 2x per diagonal: rescale long before float64 overflows
            top = float(counts[lo + 1 : hi + 2].max())
            if top > 0:
                counts[lo + 1 : hi + 2] /= top
                log_scale += math.log(top)
    return min(1.0, p)


def _log_binom(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _share(count: float, log_scale: float, steps_left: int, rights_left: int, log_all: float) -> float:
    if count <= 0:
        return 0.0
    return math.exp(math.log(count) + log_scale + _log_binom(steps_left, rights_left) - log_all)


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
