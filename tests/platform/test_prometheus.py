"""Prometheus config and alert rules, checked by the real promtool (Debian's `prometheus`; bin/ensure_tools.sh)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from tests.platform.envnames import ROOT

PROMETHEUS = ROOT / "platform" / "prometheus"
PROMTOOL = shutil.which("promtool")
# Metrics serving exports (serving/metrics.py) and the ones monitoring exports (monitoring/metrics.py).
EXPORTED = {
    "modelworks_predictions_total",
    "modelworks_http_responses_total",
    "modelworks_prediction_latency_seconds_bucket",
    "modelworks_circuit_breaker_state",
    "modelworks_prediction_log_buffer_depth",
    "modelworks_prediction_log_dropped_total",
    "modelworks_model_load_failed",
    "modelworks_log_dead_letters_total",
    "modelworks_route_staleness_seconds",
    "modelworks_tasks_not_queued_total",
    "modelworks_celery_queue_length",
    "modelworks_async_prediction_wait_seconds_bucket",
    "modelworks_celery_tasks_total",
    "up",
}
PLANNED = {"modelworks_drift_dataset_share", "modelworks_drift_detected", "modelworks_model_quality"}

if PROMTOOL is None:  # never skip: a missing tool must fail the run, not hide these checks
    pytest.fail("promtool is missing: run bin/ensure_tools.sh (make test does)", pytrace=False)


def _promtool(*args: str, cwd=PROMETHEUS) -> subprocess.CompletedProcess:
    result = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_promtool_checks_the_config_and_its_rule_files(tmp_path):
    # promtool wants the scrape token's file to exist: the shipped config, with only that path moved to a test file
    # (compose mounts the real one at /run/secrets/metrics_token).
    shipped = (PROMETHEUS / "prometheus.yml").read_text()
    assert shipped.count("credentials_file: /run/secrets/metrics_token") == 2
    token_file = tmp_path / "metrics_token"
    token_file.write_text("a-test-token\n")
    (tmp_path / "prometheus.yml").write_text(shipped.replace("/run/secrets/metrics_token", str(token_file)))
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    assert "SUCCESS" in _promtool("check", "config", "prometheus.yml", cwd=tmp_path).stdout


def test_promtool_checks_the_rules():
    _promtool("check", "rules", "alerts.yml")


def test_breaker_drift_and_celery_alerts_fire_on_synthetic_series():
    assert "SUCCESS" in _promtool("test", "rules", "alerts_test.yml").stdout


def test_every_rule_has_a_runbook_and_uses_real_or_planned_metrics():
    rules = [
        rule for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for rule in group["rules"]
    ]
    names = {rule["alert"] for rule in rules}
    assert {
        "ModelworksHighErrorRate",
        "ModelworksHighHttpErrorRate",
        "ModelworksHighP99Latency",
        "ModelworksCircuitBreakerOpen",
        "ModelworksDatasetDrift",
        "ModelworksPredictionLogBacklog",
        "ModelworksPredictionLogDropping",
        "ModelworksLogDeadLetters",
        "ModelworksModelQualityLow",
        "ModelworksCeleryQueueBacklog",
        "ModelworksCeleryWorkerDown",
        "ModelworksModelCannotLoad",
        "ModelworksServingStaleRoutes",
        "ModelworksStaleRoutesNearLimit",
        "ModelworksTasksNotQueued",
        "ModelworksAsyncPredictionsWaiting",
    } <= names
    for rule in rules:
        assert rule["annotations"]["runbook"].strip(), rule["alert"]
        assert "\n" not in rule["annotations"]["runbook"].strip(), rule["alert"]
        assert any(metric in rule["expr"] for metric in EXPORTED | PLANNED), rule["alert"]
    metrics_source = "".join(
        (ROOT / path).read_text() for path in ("serving/metrics.py", "config/celery_metrics.py", "config/queueing.py")
    )
    for metric in EXPORTED - {"up"}:
        assert metric.removesuffix("_bucket").removesuffix("_total") in metrics_source
    monitoring_source = (ROOT / "monitoring" / "metrics.py").read_text()
    for metric in PLANNED:
        assert f'"{metric}"' in monitoring_source


def test_the_stale_routes_alert_is_critical_before_pods_stop_serving_them():
    """The critical threshold is a number in the rule (Prometheus cannot read a setting): it must fire while the
    last good routes still serve, with time to act (at least 30 s) before MODELWORKS_ROUTE_MAX_STALE_SECONDS."""
    from django.conf import settings

    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    near = rules["ModelworksStaleRoutesNearLimit"]
    threshold = float(near["expr"].rsplit(">", 1)[1])
    assert "for" not in near  # fires at the first evaluation past the threshold
    assert 0 < threshold <= settings.MODELWORKS_ROUTE_MAX_STALE_SECONDS - 30
    assert "modelworks_route_staleness_seconds" in rules["ModelworksServingStaleRoutes"]["expr"]


def test_grafana_dashboard_queries_are_valid_promql(tmp_path):
    """Every panel query, with Grafana's variables filled in, passes promtool as a recording rule."""
    dashboard = json.loads((ROOT / "platform" / "grafana" / "dashboards" / "modelworks.json").read_text())
    assert dashboard["uid"] == "modelworks-serving"
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 10
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("requests per second", "latency", "rollout", "cache", "breaker", "drift", "quality"):
        assert topic in titles
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:query{i}",
                        "expr": e.replace("$__rate_interval", "5m").replace("$model", ".*"),
                    }
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(tmp_path / "dashboard_rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
