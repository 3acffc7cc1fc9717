"""Quality gate rules: parsing and arithmetic, including property-based checks against Python's own comparisons."""

from __future__ import annotations

import operator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.gates import evaluate, parse_rule, rule_problems

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize(
    ("text", "metric", "op", "constant", "offset"),
    [
        ("accuracy >= 0.9", "accuracy", ">=", 0.9, 0.0),
        ("rmse<=55", "rmse", "<=", 55.0, 0.0),
        ("f1 >= production - 0.01", "f1", ">=", None, -0.01),
        ("mae <= production + 2.5", "mae", "<=", None, 2.5),
        ("r2 > production", "r2", ">", None, 0.0),
        ("roc_auc == 1e-3", "roc_auc", "==", 0.001, 0.0),
    ],
)
def test_rules_parse(text, metric, op, constant, offset):
    rule = parse_rule(text)
    assert (rule.metric, rule.op, rule.constant, rule.offset) == (metric, op, constant, offset)


@pytest.mark.parametrize("text", ["accuracy => 0.9", "accuracy >= high", "", "0.9 <= accuracy", "f1 >= prod - 1", 7])
def test_bad_rules_are_reported_not_raised(text):
    problems = rule_problems([text])
    assert len(problems) == 1 and problems[0].startswith("rule 0:")


@given(op=st.sampled_from(sorted(OPS)), actual=finite, threshold=finite)
def test_absolute_rules_agree_with_python(op, actual, threshold):
    verdict = evaluate([f"m {op} {threshold!r}"], {"m": actual}, None)
    assert verdict["rules"][0]["passed"] is OPS[op](actual, threshold)
    assert verdict["outcome"] == ("validated" if OPS[op](actual, threshold) else "rejected")


@given(op=st.sampled_from(sorted(OPS)), actual=finite, baseline=finite, margin=st.floats(0, 100))
def test_relative_rules_compare_with_production_plus_margin(op, actual, baseline, margin):
    verdict = evaluate([f"m {op} production - {margin!r}"], {"m": actual}, {"m": baseline})
    assert verdict["rules"][0]["threshold"] == baseline - margin
    assert verdict["rules"][0]["passed"] is OPS[op](actual, baseline - margin)


def test_every_failed_rule_gets_its_own_reason():
    verdict = evaluate(["a >= 1", "b <= 1", "c >= 0"], {"a": 0.5, "b": 2.0, "c": 1.0}, None)
    assert [r["passed"] for r in verdict["rules"]] == [False, False, True]
    assert verdict["rules"][0]["reason"] == "a = 0.5, required >= 1"
    assert verdict["rules"][1]["reason"] == "b = 2, required <= 1"
