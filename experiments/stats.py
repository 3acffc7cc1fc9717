"""Experiment statistics: pure functions of per-arm sufficient statistics (n, mean, sum of squared deviations).

Frequentist, fixed horizon: a p-value or interval is valid when read once, at the planned sample size. Reading it
every day and stopping at the first "significant" day inflates false positives (peeking), so results say how far the
experiment is from its planned size (see PEEKING_NOTE). Every function is checked against scipy/statsmodels in
tests/experiments/test_stats.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import optimize, stats

SRM_THRESHOLD = 0.001
PEEKING_NOTE = (
    "Fixed-horizon statistics: p-values and intervals hold only when read once at the planned sample size. "
    "Before that, a 'significant' result may be noise from looking repeatedly; do not stop early on it."
)


@dataclass(frozen=True)
class Moments:
    """One arm's data for one metric: count, mean and m2, the sum of squared deviations from that mean.

    Not raw sums: E[x^2] - E[x]^2 cancels catastrophically when the spread is small next to the mean (values near
    1e8 with a standard deviation of 1 lose every digit of the variance). Groups combine with Chan's update (`+`),
    and the database answers each group's AVG and VAR_POP (metrics.py), never a sum of squares.
    """

    n: int
    avg: float  # the mean; 0.0 without values, where `mean` is NaN
    m2: float

    @classmethod
    def of(cls, values) -> Moments:
        """Two passes: the mean, then the squared deviations from it (both correctly rounded sums)."""
        values = [float(v) for v in values]
        if not values:
            return cls(0, 0.0, 0.0)
        mean = math.fsum(values) / len(values)
        return cls(len(values), mean, math.fsum((v - mean) ** 2 for v in values))

    @classmethod
    def of_group(cls, n: int, mean: float | None, var_pop: float | None) -> Moments:
        """From a database group's COUNT, AVG and VAR_POP."""
        if not n:
            return cls(0, 0.0, 0.0)
        return cls(n, float(mean or 0.0), max(float(var_pop or 0.0), 0.0) * n)

    def __add__(self, other: Moments) -> Moments:
        """The moments of both groups together (Chan, Golub and LeVeque's pairwise update)."""
        if not other.n:
            return self
        if not self.n:
            return other
        n = self.n + other.n
        delta = other.avg - self.avg
        mean = self.avg + delta * (other.n / n)
        return Moments(n, mean, self.m2 + other.m2 + delta * delta * (self.n * other.n / n))

    @property
    def mean(self) -> float:
        return self.avg if self.n else math.nan

    @property
    def total(self) -> float:
        """The sum of the values (the number of successes for 0/1 values)."""
        return self.avg * self.n

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1); for 0/1 values n/(n-1) * p(1-p)."""
        if self.n < 2:
            return math.nan
        return self.m2 / (self.n - 1)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class ArmSummary:
    n: int
    mean: float
    ci: Interval


@dataclass(frozen=True)
class Comparison:
    """A treatment arm against control: lift = treatment - control; relative = treatment / control - 1."""

    absolute_lift: float
    absolute_ci: Interval
    relative_lift: float
    relative_ci: Interval
    p_value: float
    test: str  # "two-proportion z" or "welch t"


def _z(alpha: float) -> float:
    return float(stats.norm.isf(alpha / 2))


def wilson_interval(successes: float, n: int, alpha: float = 0.05) -> Interval:
    """Wilson score interval for a proportion (good coverage even near 0 and 1, unlike the Wald interval)."""
    if n == 0:
        return Interval(math.nan, math.nan)
    z = _z(alpha)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(centre - half, centre + half)


def t_interval(m: Moments, alpha: float = 0.05) -> Interval:
    if m.n < 2:
        return Interval(math.nan, math.nan)
    half = float(stats.t.isf(alpha / 2, m.n - 1)) * math.sqrt(m.variance / m.n)
    return Interval(m.mean - half, m.mean + half)


def summarize(m: Moments, *, binary: bool, alpha: float = 0.05) -> ArmSummary:
    ci = wilson_interval(m.total, m.n, alpha) if binary else t_interval(m, alpha)
    return ArmSummary(m.n, m.mean, ci)


def _relative(treatment_mean: float, var_t: float, control_mean: float, var_c: float, z: float) -> tuple:
    """Relative lift t/c - 1 with a delta-method interval; var_t and var_c are the variances of the two means."""
    if control_mean == 0 or math.isnan(control_mean):
        return math.nan, Interval(math.nan, math.nan)
    ratio = treatment_mean / control_mean
    se = math.sqrt(var_t / control_mean**2 + treatment_mean**2 * var_c / control_mean**4)
    return ratio - 1, Interval(ratio - 1 - z * se, ratio - 1 + z * se)


def compare_proportions(control: Moments, treatment: Moments, alpha: float = 0.05) -> Comparison:
    """Two-proportion z-test (pooled variance under H0) with an unpooled Wald interval for the difference."""
    if control.n == 0 or treatment.n == 0:
        return _empty("two-proportion z")
    p_c, p_t = control.mean, treatment.mean
    z = _z(alpha)
    var_c, var_t = p_c * (1 - p_c) / control.n, p_t * (1 - p_t) / treatment.n
    diff = p_t - p_c
    half = z * math.sqrt(var_c + var_t)
    pooled = (control.total + treatment.total) / (control.n + treatment.n)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / treatment.n))
    p_value = float(2 * stats.norm.sf(abs(diff) / se0)) if se0 > 0 else (1.0 if diff == 0 else 0.0)
    relative, relative_ci = _relative(p_t, var_t, p_c, var_c, z)
    return Comparison(diff, Interval(diff - half, diff + half), relative, relative_ci, p_value, "two-proportion z")


def compare_means(control: Moments, treatment: Moments, alpha: float = 0.05) -> Comparison:
    """Welch's t-test and interval (unequal variances, Welch-Satterthwaite degrees of freedom)."""
    if control.n < 2 or treatment.n < 2:
        return _empty("welch t")
    var_c, var_t = control.variance / control.n, treatment.variance / treatment.n
    diff = treatment.mean - control.mean
    se = math.sqrt(var_c + var_t)
    if se == 0:
        p_value = 1.0 if diff == 0 else 0.0
        return Comparison(diff, Interval(diff, diff), *_relative(treatment.mean, 0, control.mean, 0, 0), p_value,
                          "welch t")  # fmt: skip
    df = (var_c + var_t) ** 2 / (var_c**2 / (control.n - 1) + var_t**2 / (treatment.n - 1))
    half = float(stats.t.isf(alpha / 2, df)) * se
    p_value = float(2 * stats.t.sf(abs(diff) / se, df))
    relative, relative_ci = _relative(treatment.mean, var_t, control.mean, var_c, _z(alpha))
    return Comparison(diff, Interval(diff - half, diff + half), relative, relative_ci, p_value, "welch t")


def _empty(test: str) -> Comparison:
    nan = Interval(math.nan, math.nan)
    return Comparison(math.nan, nan, math.nan, nan, math.nan, test)


@dataclass(frozen=True)
class SampleRatio:
    chi2: float
    p_value: float
    mismatch: bool  # p < SRM_THRESHOLD: the allocation is broken and the results cannot be trusted


def sample_ratio_mismatch(observed: list[int], weights: list[float]) -> SampleRatio:
    """Chi-square goodness of fit of observed arm counts against the configured weights."""
    total, weight_sum = sum(observed), sum(weights)
    if total == 0:
        return SampleRatio(0.0, 1.0, False)
    chi2 = 0.0
    for count, weight in zip(observed, weights, strict=True):
        expected = total * weight / weight_sum
        if expected > 0:
            chi2 += (count - expected) ** 2 / expected
        elif count > 0:
            return SampleRatio(math.inf, 0.0, True)  # units in an arm that should get none
    dof = sum(1 for w in weights if w > 0) - 1
    p_value = float(stats.chi2.sf(chi2, dof)) if dof > 0 else 1.0
    return SampleRatio(chi2, p_value, p_value < SRM_THRESHOLD)


def proportion_effect_size(baseline: float, target: float) -> float:
    """Cohen's h between two proportions (the arcsine-transformed difference)."""
    return 2 * math.asin(math.sqrt(target)) - 2 * math.asin(math.sqrt(baseline))


def power_two_sample(effect_size: float, n_per_arm: float, alpha: float = 0.05) -> float:
    """Power of a two-sided two-sample normal test with equal arms (both rejection tails counted)."""
    crit = _z(alpha)
    shift = abs(effect_size) * math.sqrt(n_per_arm / 2)
    return float(stats.norm.sf(crit - shift) + stats.norm.cdf(-crit - shift))


def required_sample_size(effect_size: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Units per arm for a two-sided test at `alpha` to detect a standardised `effect_size` with `power`.

    Binary metrics: Cohen's h (proportion_effect_size); continuous ones: difference / standard deviation.
    """
    if effect_size == 0 or math.isnan(effect_size):
        return math.inf
    lower = 1e-6
    if power_two_sample(effect_size, lower, alpha) >= power:
        return lower  # an effect this large next to the spread (values near 1e8, sd 1): any sample detects it
    upper = 2 * ((_z(alpha) + float(stats.norm.ppf(power))) / abs(effect_size)) ** 2 + 10
    return float(optimize.brentq(lambda n: power_two_sample(effect_size, n, alpha) - power, lower, upper, xtol=1e-10))
