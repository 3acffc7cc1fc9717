"""Quality gates: rules like "accuracy >= 0.9", "rmse <= 55", "f1 >= production - 0.01" or
"accuracy >= parent - 0.005".

A rule compares one metric of the candidate version with a constant, or with the same metric of the version the
`production` alias points at, or of the version the candidate was derived from (`parent`: a quantised or distilled
version's source), plus or minus a margin.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any

OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RULE = re.compile(
    rf"^\s*(?P<metric>[a-z_][a-z0-9_]*)\s*(?P<op>>=|<=|==|>|<)\s*"
    rf"(?:(?P<const>{_NUMBER})|(?P<baseline>production|parent)\s*(?:(?P<sign>[-+])\s*(?P<margin>{_NUMBER}))?)\s*$"
)


@dataclass(frozen=True)
class Rule:
    text: str
    metric: str
    op: str
    constant: float | None  # None: relative to `baseline`
    offset: float = 0.0
    baseline: str = "production"  # or "parent"

    @property
    def relative(self) -> bool:
        return self.constant is None


def parse_rule(text: str) -> Rule:
    match = _RULE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"cannot read the rule {text!r}: write 'metric OP number' or 'metric OP production [+|- margin]', "
            "(or parent), OP one of >=, <=, >, <, =="
        )
    if match["const"] is not None:
        return Rule(text.strip(), match["metric"], match["op"], float(match["const"]))
    offset = float(match["margin"]) if match["margin"] else 0.0
    if match["sign"] == "-":
        offset = -offset
    return Rule(text.strip(), match["metric"], match["op"], None, offset, match["baseline"])


def rule_problems(rules: Any) -> list[str]:
    """Readable problems with a list of rule strings (empty when all parse)."""
    if not isinstance(rules, list):
        return ['must be a list of rules such as "accuracy >= 0.9"']
    problems = []
    for index, text in enumerate(rules):
        try:
            parse_rule(text)
        except ValueError as exc:
            problems.append(f"rule {index}: {exc}")
    return problems


def evaluate(
    rules: list[str],
    metrics: dict[str, float],
    production_metrics: dict[str, float] | None,
    parent_metrics: dict[str, float] | None = None,
) -> dict:
    """Each rule's verdict and the overall outcome ("validated" or "rejected")."""
    results = []
    for text in rules:
        rule = parse_rule(text)
        result: dict[str, Any] = {
            "rule": rule.text,
            "metric": rule.metric,
            "actual": metrics.get(rule.metric),
        }
        if rule.relative:
            against = production_metrics if rule.baseline == "production" else parent_metrics
            baseline = (against or {}).get(rule.metric)
            if against is None:
                absent = "no production version yet" if rule.baseline == "production" else "not derived from a version"
                result.update(passed=True, threshold=None, reason=f"{absent}: rule not applicable")
                results.append(result)
                continue
            if baseline is None:
                result.update(passed=False, threshold=None, reason=f"the {rule.baseline} version has no {rule.metric}")
                results.append(result)
                continue
            threshold = baseline + rule.offset
        else:
            threshold = rule.constant
        result["threshold"] = threshold
        actual = result["actual"]
        if actual is None or not isinstance(actual, int | float) or math.isnan(actual):
            result.update(passed=False, reason=f"{rule.metric} is not available for this version")
        elif OPERATORS[rule.op](actual, threshold):
            result.update(passed=True, reason="")
        else:
            result.update(passed=False, reason=f"{rule.metric} = {actual:.6g}, required {rule.op} {threshold:.6g}")
        results.append(result)
    outcome = "validated" if all(r["passed"] for r in results) else "rejected"
    return {"outcome": outcome, "rules": results}
