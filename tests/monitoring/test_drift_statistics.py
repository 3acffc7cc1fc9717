"""Drift statistics against independent oracles: scipy's ks_2samp, wasserstein_distance, chi2_contingency, BH."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from monitoring.drift import ks as ks_module
from monitoring.drift.categorical import categorical_drift, chi2_contingency_2xk
from monitoring.drift.corrections import benjamini_hochberg, bonferroni
from monitoring.drift.ks_exact import ks_2samp_exact_sf, lattice_statistic
from monitoring.drift.numeric import numeric_drift, psi_from_shares
from monitoring.drift.report import DriftOptions, drift_report

samples = st.lists(st.integers(-6, 6), min_size=1, max_size=120)  # small integer ranges: many ties


def _numeric(ref, cur):
    r = np.sort(np.asarray(ref, dtype=float))[None, :]
    c = np.sort(np.asarray(cur, dtype=float))[None, :]
    return numeric_drift(r, c)


def _exact_by_counting(n1: int, n2: int, d: float) -> float:
    """P(D >= d) by counting lattice paths in exact integers: the paths from (0, 0) to (n1, n2) that stay where
    |x/n1 - y/n2| < d, against all C(n1 + n2, n1) of them. Slow, but no floating point until the last division."""
    g = math.gcd(n1, n2)
    h = round(d * (n1 // g) * n2)
    a, b = n1 // g, n2 // g

    def inside(x: int, y: int) -> bool:
        return abs(b * x - a * y) < h

    column = [1 if inside(0, y) else 0 for y in range(n2 + 1)]
    for y in range(1, n2 + 1):
        column[y] = column[y - 1] if column[y] else 0
    for x in range(1, n1 + 1):
        column[0] = column[0] if inside(x, 0) else 0
        for y in range(1, n2 + 1):
            column[y] = column[y] + column[y - 1] if inside(x, y) else 0
    return float(Fraction(math.comb(n1 + n2, n1) - column[n2], math.comb(n1 + n2, n1)))


def _scipy_exact(ref, cur) -> tuple[float, float | None]:
    """ks_2samp(method="exact")'s statistic and p-value, the p-value None where scipy gives up on it (it then answers
    asymptotically: for instance 2 * P rounds above 1 at the smallest lattice step, where the exact value is 1)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = stats.ks_2samp(ref, cur, method="exact")
    if any("Exact calculation unsuccessful" in str(w.message) for w in caught):
        return float(result.statistic), None
    return float(result.statistic), float(result.pvalue)


@settings(max_examples=300, deadline=None)
@given(samples, samples)
def test_ks_equals_scipy_exact_mode_with_ties(ref, cur):
    ours = _numeric(ref, cur)
    statistic, theirs = _scipy_exact(ref, cur)
    assert abs(ours.ks_statistic[0] - statistic) <= 1e-9
    if theirs is None:
        theirs = _exact_by_counting(len(ref), len(cur), ours.ks_statistic[0])
    assert abs(ours.p_value[0] - theirs) <= 1e-9


def test_the_exact_ks_distribution_uses_no_private_scipy_function():
    # Issue 19 item 5: scipy.stats._stats_py._attempt_exact_2kssamp can move or change in any scipy release.
    source = "\n".join(path.read_text() for path in Path(ks_module.__file__).parent.glob("*.py"))
    assert "scipy.stats._" not in source and "_attempt_exact" not in source


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.booleans(), st.floats(0, 3), st.integers(0, 2**32 - 1))
def test_exact_ks_distribution_equals_scipy_exact_mode(n1, n2, same_size, shift, seed):
    # Continuous samples (no ties), shifted anywhere from no drift to nearly disjoint: every region of the lattice;
    # equal sizes often, since they take their own formula.
    n2 = n1 if same_size else n2
    rng = np.random.default_rng(seed)
    ref, cur = rng.normal(size=n1), rng.normal(shift, size=n2)
    statistic, theirs = _scipy_exact(ref, cur)
    h, snapped = lattice_statistic(n1, n2, statistic)
    ours = ks_2samp_exact_sf(n1, n2, h)
    if theirs is None or n1 * n2 <= 2_000:
        assert ours == pytest.approx(_exact_by_counting(n1, n2, snapped), abs=1e-12)
    if theirs is not None:
        assert ours == pytest.approx(theirs, abs=1e-12, rel=1e-9)
    assert _numeric(ref, cur).p_value[0] == pytest.approx(ours, abs=1e-15)


@pytest.mark.parametrize(
    ("n1", "n2", "shift"), [(9_000, 10_000, 0.03), (9_999, 10_000, 0.1), (10_000, 10_000, 0.25), (7, 5_000, 1.0)]
)
def test_exact_ks_distribution_near_the_exact_limit_and_far_in_the_tail(n1, n2, shift):
    # 10,000 a side is ks_2samp's exact limit; p-values down to about 1e-50 keep their relative precision.
    rng = np.random.default_rng(n1 + n2)
    ref, cur = rng.normal(size=n1), rng.normal(shift, size=n2)
    _, theirs = _scipy_exact(ref, cur)
    assert theirs is not None
    assert _numeric(ref, cur).p_value[0] == pytest.approx(theirs, abs=1e-15, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(samples, samples)
def test_wasserstein_equals_scipy(ref, cur):
    assert _numeric(ref, cur).wasserstein[0] == pytest.approx(stats.wasserstein_distance(ref, cur), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_ks_equals_scipy_asymptotic_mode_on_large_samples_with_ties(seed):
    rng = np.random.default_rng(seed)
    ref = np.round(rng.normal(size=(12_000, 4)), 2)
    # the last column's p-value is far below 1e-12: given as Massart's bound, still within 1e-9 of scipy's
    cur = np.round(rng.normal(loc=[0.0, 0.02, 0.1, 0.5], size=(10_001 + seed * 977, 4)), 2)
    ours = numeric_drift(np.sort(ref.T, axis=1), np.sort(cur.T, axis=1))
    assert ours.p_value[3] < 1e-12
    for j in range(4):
        theirs = stats.ks_2samp(ref[:, j], cur[:, j])
        assert abs(ours.ks_statistic[j] - theirs.statistic) <= 1e-9
        assert abs(ours.p_value[j] - theirs.pvalue) <= 1e-9
        assert ours.wasserstein[j] == pytest.approx(stats.wasserstein_distance(ref[:, j], cur[:, j]), rel=1e-9)


def test_ks_equals_scipy_in_the_exact_mode_near_its_limit():
    rng = np.random.default_rng(7)
    ref, cur = rng.normal(size=9_000), rng.normal(0.03, size=10_000)
    ours, theirs = _numeric(ref, cur), stats.ks_2samp(ref, cur)
    assert abs(ours.ks_statistic[0] - theirs.statistic) <= 1e-9
    assert abs(ours.p_value[0] - theirs.pvalue) <= 1e-9


def test_psi_worked_by_hand():
    # shares 0.5/0.5 -> 0.25/0.75: (0.25-0.5)ln(0.5) + (0.75-0.5)ln(1.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert psi_from_shares(np.array([[0.5], [0.5]]), np.array([[0.25], [0.75]]))[0] == pytest.approx(expected)
    # An empty bin counts as a share of 1e-4 instead of making PSI infinite.
    floored = (0.5 - 1e-4) * math.log(0.5 / 1e-4) + (0.5 - 1.0) * math.log(0.5 / 1.0)
    assert psi_from_shares(np.array([[0.0], [1.0]]), np.array([[0.5], [0.5]]))[0] == pytest.approx(floored)
    assert categorical_drift(list("aabb"), list("abbb")).psi == pytest.approx(expected)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 40), min_size=2, max_size=8),
    st.lists(st.integers(0, 40), min_size=2, max_size=8),
)
def test_chi_square_equals_scipy_chi2_contingency(a, b):
    k = min(len(a), len(b))
    table = np.array([a[:k], b[:k]], dtype=float)
    table = table[:, table.sum(axis=0) > 0]  # categories seen in neither sample are not part of the table
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return
    statistic, p, dof = chi2_contingency_2xk(table[0], table[1])
    theirs = stats.chi2_contingency(table)
    assert statistic == pytest.approx(theirs.statistic, abs=1e-9)
    assert p == pytest.approx(theirs.pvalue, abs=1e-12)
    assert dof == theirs.dof


def test_unseen_categories_are_explicit_and_count_as_drift():
    result = categorical_drift(["a"] * 50 + ["b"] * 50, ["a"] * 40 + ["b"] * 40 + ["z"] * 20)
    assert result.unseen == ["z"]
    assert result.unseen_share == pytest.approx(0.2)
    theirs = stats.chi2_contingency(np.array([[50, 50, 0], [40, 40, 20]]))
    assert result.chi2 == pytest.approx(theirs.statistic) and result.p_value < 1e-4


def test_corrections_worked_by_hand_and_against_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.20])
    assert bonferroni(p).tolist() == pytest.approx([0.04, 0.16, 0.12, 0.80])
    # BH: sorted 0.01,0.03,0.04,0.20 -> 0.04, 0.06, 0.0533, 0.20 -> step-up minima 0.04, 0.0533, 0.0533, 0.20
    assert benjamini_hochberg(p).tolist() == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    rng = np.random.default_rng(1)
    many = rng.uniform(size=40) ** 3
    assert benjamini_hochberg(many) == pytest.approx(stats.false_discovery_control(many), abs=1e-12)


def _frames(seed=1, n=400):
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(list("xyz"), n)})
    current = pd.DataFrame(
        {"a": rng.normal(0.5, size=n), "b": rng.normal(0.0, size=n), "c": rng.choice(list("xyz"), n)}
    )
    return reference, current


def test_report_flags_the_shifted_feature_and_dataset_drift_by_share():
    reference, current = _frames()
    kinds = {"a": "numeric", "b": "numeric", "c": "categorical"}
    report = drift_report(reference, current, kinds)
    verdict = {f["name"]: f["drifted"] for f in report["features"]}
    assert verdict == {"a": True, "b": False, "c": False}
    assert (report["tested"], report["drifted"], report["dataset_drift"]) == (3, 1, False)
    assert drift_report(reference, current, kinds, DriftOptions(dataset_drift_share=1 / 3))["dataset_drift"]
    feature = report["features"][0]
    assert len(feature["histogram"]["reference"]) == len(feature["histogram"]["edges"]) - 1 == 20
    assert sum(feature["histogram"]["current"]) == pytest.approx(1.0)


def test_an_effect_size_requirement_ignores_significant_but_tiny_shifts():
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"a": rng.normal(size=50_000)})
    current = pd.DataFrame({"a": rng.normal(0.04, size=50_000)})  # significant at this size, but tiny
    plain = drift_report(reference, current, {"a": "numeric"})
    strict = drift_report(reference, current, {"a": "numeric"}, DriftOptions(min_wasserstein=0.1))
    assert plain["features"][0]["drifted"] is True
    assert strict["features"][0]["significant"] is True and strict["features"][0]["drifted"] is False


def test_missing_values_are_dropped_per_feature_and_empty_features_skipped():
    reference = pd.DataFrame({"a": [1.0, 2.0, np.nan, 4.0], "b": [np.nan] * 4})
    current = pd.DataFrame({"a": [1.0, np.nan, 3.0, 5.0], "b": [1.0, 2.0, 3.0, 4.0]})
    report = drift_report(reference, current, {"a": "numeric", "b": "numeric"})
    a, b = report["features"]
    theirs = stats.ks_2samp([1.0, 2.0, 4.0], [1.0, 3.0, 5.0])
    assert a["p_value"] == pytest.approx(theirs.pvalue, abs=1e-12) and a["missing_share_current"] == 0.25
    assert "skipped" in b and report["tested"] == 1


DECILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def _psi_by_definition(ref, cur) -> float:
    """PSI as documented, written out directly: np.quantile deciles of the reference, bins (-inf, e1], (e1, e2], ...,
    (e9, inf), shares floored at 1e-4, sum (c - r) ln(c / r)."""
    edges = np.quantile(np.asarray(ref, dtype=float), DECILES)

    def shares(values):
        x = np.asarray(values, dtype=float)
        at_most = np.array([(x <= e).sum() for e in edges] + [len(x)])
        return np.maximum(np.diff(at_most, prepend=0) / len(x), 1e-4)

    r, c = shares(ref), shares(cur)
    return float(((c - r) * np.log(c / r)).sum())


def test_psi_on_a_tie_group_at_a_decile_keeps_the_group_in_its_bin():
    # Issue 19 item 3: interpolating a*(1-f) + b*f between equal neighbours -0.1, -0.1 landed one ulp below -0.1,
    # and the right-closed bin then sent the whole tie group to the next bin (3.687 instead of 4.156).
    ref = [-2.3, -1.2, -0.9, -0.9, -0.3, -0.2, -0.1, -0.1, 0.8, 1.3]
    cur = [-0.9, -0.9, -0.9, -0.8, -0.5, -0.5, -0.5, -0.2, -0.0, 0.3, 0.5, 0.6, 1.2]
    assert _psi_by_definition(ref, cur) == pytest.approx(4.15585192, abs=1e-8)
    assert _numeric(ref, cur).psi[0] == pytest.approx(_psi_by_definition(ref, cur), abs=1e-12)


rounded = st.lists(
    st.floats(-3, 3, allow_nan=False).map(lambda v: round(v, 1)), min_size=1, max_size=80
)  # real-looking values rounded to one decimal: tie groups everywhere, decimal values that are not exact in binary


@settings(max_examples=400, deadline=None)
@given(rounded, rounded)
def test_psi_equals_the_np_quantile_definition_on_tie_heavy_data(ref, cur):
    assert _numeric(ref, cur).psi[0] == pytest.approx(_psi_by_definition(ref, cur), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(rounded.filter(lambda v: len(v) >= 2), min_size=2, max_size=2), rounded)
def test_psi_block_of_features_equals_the_definition_per_feature(columns, cur):
    # A block of features of equal size: the edges are per feature (row), as one feature at a time.
    n = min(len(c) for c in columns)
    ref_block = np.sort(np.array([c[:n] for c in columns], dtype=float), axis=1)
    cur_block = np.sort(np.array([cur, cur[::-1]], dtype=float), axis=1)
    psi = numeric_drift(ref_block, cur_block).psi
    for j in range(2):
        assert psi[j] == pytest.approx(_psi_by_definition(ref_block[j], cur_block[j]), abs=1e-9)
