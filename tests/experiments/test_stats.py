"""Every statistic against an independent implementation: scipy and statsmodels on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats import power as smp
from statsmodels.stats import proportion as smprop
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

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
    assert not stats.sample_ratio_mismatch([0, 0], [1, 1]).mismatch
