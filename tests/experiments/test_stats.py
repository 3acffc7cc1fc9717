"""Every statistic against an independent implementation: scipy and statsmodels on random data."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats import power as smp
from statsmodels.stats import proportion as smprop
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttest_ind

from experiments import stats
from experiments.stats import Moments

SEEDS = range(20)


def binary(seed: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    return (r.random(r.integers(50, 3000)) < r.uniform(0.02, 0.6)).astype(float), (
        r.random(r.integers(50, 3000)) < r.uniform(0.02, 0.6)
    ).astype(float)


def continuous(seed: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    return r.lognormal(1.0, r.uniform(0.2, 1.5), r.integers(5, 2000)), r.lognormal(
        1.1, r.uniform(0.2, 1.5), r.integers(5, 2000)
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_moments_give_numpy_mean_and_sample_variance(seed):
    _, values = continuous(seed)
    m = Moments.of(values)
    assert m.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert m.variance == pytest.approx(np.var(values, ddof=1), rel=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_two_proportion_z_test_and_intervals_equal_statsmodels(seed):
    control, treatment = binary(seed)
    c, t = Moments.of(control), Moments.of(treatment)
    result = stats.compare_proportions(c, t)
    x = [treatment.sum(), control.sum()]
    n = [len(treatment), len(control)]
    _, p_value = smprop.proportions_ztest(x, n)
    assert result.p_value == pytest.approx(p_value, rel=1e-9, abs=1e-15)
    low, high = smprop.confint_proportions_2indep(x[0], n[0], x[1], n[1], method="wald", compare="diff")
    assert (result.absolute_ci.low, result.absolute_ci.high) == pytest.approx((low, high), rel=1e-9)
    assert result.absolute_lift == pytest.approx(treatment.mean() - control.mean(), rel=1e-12)
    wilson = stats.summarize(c, binary=True).ci
    assert (wilson.low, wilson.high) == pytest.approx(
        smprop.proportion_confint(control.sum(), len(control), method="wilson"), rel=1e-9
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_welch_t_test_and_intervals_equal_scipy_and_statsmodels(seed):
    control, treatment = continuous(seed)
    c, t = Moments.of(control), Moments.of(treatment)
    result = stats.compare_means(c, t)
    assert result.p_value == pytest.approx(sps.ttest_ind(treatment, control, equal_var=False).pvalue, rel=1e-7)
    compare = CompareMeans(DescrStatsW(treatment), DescrStatsW(control))
    assert (result.absolute_ci.low, result.absolute_ci.high) == pytest.approx(
        compare.tconfint_diff(usevar="unequal"), rel=1e-7
    )
    arm = stats.summarize(c, binary=False).ci
    assert (arm.low, arm.high) == pytest.approx(DescrStatsW(control).tconfint_mean(), rel=1e-9)


def large_offset(seed: int, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Values near `offset` with a standard deviation of 1 and a difference near the 5% boundary."""
    r = np.random.default_rng(seed)
    n_c, n_t = int(r.integers(20, 3000)), int(r.integers(20, 3000))
    shift = r.uniform(0.5, 3.0) * math.sqrt(1 / n_c + 1 / n_t)  # from clearly null to clearly significant
    return offset + r.normal(size=n_c), offset + shift + r.normal(size=n_t)


@pytest.mark.parametrize("offset", [1e8, 1e9])
@pytest.mark.parametrize("seed", range(40))
def test_welch_verdicts_and_p_values_equal_statsmodels_on_large_offsets(seed, offset):
    # Issue 19 item 4: with E[x^2] - E[x]^2 a quarter of these verdicts flipped near 1e8 and half near 1e9.
    control, treatment = large_offset(seed, offset)
    result = stats.compare_means(Moments.of(control), Moments.of(treatment))
    _, p_value, _ = ttest_ind(treatment, control, usevar="unequal")
    # statsmodels sums 1e8-sized values in plain floating point: its means (and so p-values) are good to ~1e-5.
    assert result.p_value == pytest.approx(p_value, rel=1e-4, abs=1e-12)
    assert (result.p_value < 0.05) == (p_value < 0.05)
    low, high = CompareMeans(DescrStatsW(treatment), DescrStatsW(control)).tconfint_diff(usevar="unequal")
    assert (result.absolute_ci.low, result.absolute_ci.high) == pytest.approx((low, high), abs=1e-6)
    assert Moments.of(control).variance == pytest.approx(np.var(control, ddof=1), rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.floats(-1e3, 1e3), max_size=30), min_size=1, max_size=8),
    st.sampled_from([0.0, 1e8, 1e9, -1e9]),
)
def test_moments_of_groups_combine_to_the_moments_of_all_values(groups, offset):
    # metrics.py adds up per-day groups (from the database's AVG and VAR_POP) in any order. The oracle is the
    # statistics module, exact in rational arithmetic (numpy's own sums are not, at these offsets).
    groups = [[offset + v for v in group] for group in groups]
    combined = Moments(0, 0.0, 0.0)
    for group in groups:
        combined = combined + Moments.of(group)
    values = [v for group in groups for v in group]
    assert combined.n == len(values)
    if len(values):
        assert combined.mean == pytest.approx(statistics.mean(values), rel=1e-15)
    if len(values) > 1:
        exact = statistics.variance(values)
        # A group's mean is a float: off by up to half a spacing at the offset. Chan's update turns that into an
        # error of about |delta| * spacing in m2, at most ~spacing * sqrt(variance * n) in the variance.
        tolerance = 1e-9 * (1 + exact) + 50 * float(np.spacing(abs(offset))) * math.sqrt(exact * len(values))
        assert combined.variance == pytest.approx(exact, abs=tolerance)
        parts = [Moments.of_group(len(g), statistics.mean(g), statistics.pvariance(g)) for g in groups if g]
        assert sum(parts, Moments(0, 0.0, 0.0)).variance == pytest.approx(exact, abs=tolerance)


def numeric_delta_method(mean_t, var_t, mean_c, var_c, z=1.959963984540054):
    """The delta method written generically: gradient of f(t, c) = t / c - 1 by central differences."""

    def f(a, b):
        return a / b - 1

    h = 1e-6
    grad = np.array(
        [
            (f(mean_t + h, mean_c) - f(mean_t - h, mean_c)) / (2 * h),
            (f(mean_t, mean_c + h) - f(mean_t, mean_c - h)) / (2 * h),
        ]
    )
    se = math.sqrt(grad @ np.diag([var_t, var_c]) @ grad)
    return f(mean_t, mean_c) - z * se, f(mean_t, mean_c) + z * se


@pytest.mark.parametrize("seed", SEEDS)
def test_relative_lift_interval_is_the_delta_method(seed):
    control, treatment = continuous(seed)
    c, t = Moments.of(control), Moments.of(treatment)
    result = stats.compare_means(c, t)
    expected = numeric_delta_method(t.mean, t.variance / t.n, c.mean, c.variance / c.n)
    assert (result.relative_ci.low, result.relative_ci.high) == pytest.approx(expected, rel=1e-5)
    assert result.relative_lift == pytest.approx(treatment.mean() / control.mean() - 1, rel=1e-12)


def test_relative_lift_interval_covers_the_true_lift_about_95_percent_of_the_time():
    r = np.random.default_rng(1)
    covered, trials = 0, 2000
    for _ in range(trials):
        c = Moments.of(r.random(2000) < 0.10)
        t = Moments.of(r.random(2000) < 0.12)
        ci = stats.compare_proportions(c, t).relative_ci
        covered += ci.low <= 0.12 / 0.10 - 1 <= ci.high
    assert 0.935 <= covered / trials <= 0.965


@pytest.mark.parametrize("seed", SEEDS)
def test_sample_ratio_mismatch_equals_scipy_chisquare(seed):
    r = np.random.default_rng(seed)
    weights = list(r.integers(1, 100, r.integers(2, 5)))
    observed = list(r.multinomial(int(r.integers(100, 50_000)), np.array(weights) / sum(weights)))
    result = stats.sample_ratio_mismatch(observed, weights)
    expected = sps.chisquare(observed, np.array(weights) / sum(weights) * sum(observed))
    assert result.chi2 == pytest.approx(expected.statistic, rel=1e-9)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-7, abs=1e-300)


def test_a_planted_52_48_split_on_50_50_weights_is_flagged():
    assert stats.sample_ratio_mismatch([5200, 4800], [50, 50]).mismatch
    assert not stats.sample_ratio_mismatch([5030, 4970], [50, 50]).mismatch


@pytest.mark.parametrize(
    ("baseline", "lift", "alpha", "power"),
    [(0.1, 0.05, 0.05, 0.8), (0.3, 0.1, 0.01, 0.9), (0.02, 0.2, 0.05, 0.8), (0.5, -0.03, 0.1, 0.95)],
)
def test_required_sample_size_equals_statsmodels(baseline, lift, alpha, power):
    h = stats.proportion_effect_size(baseline, baseline * (1 + lift))
    assert h == pytest.approx(smprop.proportion_effectsize(baseline * (1 + lift), baseline), rel=1e-12)
    expected = smp.NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=1.0)
    assert stats.required_sample_size(h, alpha, power) == pytest.approx(expected, rel=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.floats(0.01, 3.0), st.floats(2.0, 1e6), st.sampled_from([0.01, 0.05, 0.1]))
def test_power_equals_statsmodels(effect, n, alpha):
    expected = smp.NormalIndPower().power(effect_size=effect, nobs1=n, alpha=alpha, ratio=1.0)
    assert stats.power_two_sample(effect, n, alpha) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_degenerate_inputs_give_nan_not_errors():
    empty = Moments(0, 0.0, 0.0)
    one = Moments.of([1.0])
    assert math.isnan(stats.compare_proportions(empty, one).p_value)
    assert math.isnan(stats.compare_means(one, one).p_value)
    same = stats.compare_means(Moments.of([2.0, 2.0]), Moments.of([2.0, 2.0]))
    assert same.p_value == 1.0 and same.absolute_lift == 0.0
    assert stats.required_sample_size(0.0) == math.inf
    # A 5% MDE on values near 1e8 with a standard deviation of 1 is an effect of 5e6 sd: no root to bracket.
    assert 0 < stats.required_sample_size(5e6) <= 1
    assert not stats.sample_ratio_mismatch([0, 0], [1, 1]).mismatch
