"""A real Prometheus (Debian) scrapes a real gunicorn of the app; the prometheus-adapter query follows the traffic."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.platform.envnames import ROOT
from tests.platform.processes import free_port, request, start_gunicorn, stop, wait_for

PROMETHEUS = shutil.which("prometheus")
ADAPTER = ROOT / "platform" / "k8s" / "prometheus-adapter" / "adapter-config.yaml"

if PROMETHEUS is None:  # never skip: a missing tool must fail the run, not hide these checks
    pytest.fail("prometheus is missing: run bin/ensure_tools.sh (make test does)", pytrace=False)


def adapter_query(namespace: str, pod: str) -> str:
    """The adapter rule's metricsQuery, expanded the way prometheus-adapter does for one pod."""
    (rule,) = yaml.safe_load(yaml.safe_load(ADAPTER.read_text())["data"]["config.yaml"])["rules"]
    series = rule["seriesQuery"].split("{")[0]
    return (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", f'namespace="{namespace}",pod=~"{pod}"')
        .replace("<<.GroupBy>>", "pod")
    )


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a local test URL
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.timeout(90)
@pytest.mark.django_db(transaction=True)
def test_prometheus_scrapes_the_app_and_the_adapter_query_tracks_the_request_rate(
    production_and_key, artifact_root, tmp_path
):
    key, row = production_and_key
    web, prom = free_port(), free_port()
    processes, logs = [], []
    body = json.dumps({"instances": [row]}).encode()
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
    try:
        # Two gunicorn workers: the scrape sees their counters merged (multiprocess mode).
        # The app answers /metrics to the scrape token alone (no allowed networks): the shipped config must send it.
        token = "scrape-" + "Qw3rT" * 8
        scrape_env = {"MODELWORKS_METRICS_TOKEN": token, "MODELWORKS_METRICS_ALLOWED_NETWORKS": ""}
        processes.append((start_gunicorn(web, tmp_path / "web", artifact_root, logs, workers=2, env=scrape_env), True))
        wait_for(lambda: request(web, "GET", "/healthz")[0] == 200, 60, "gunicorn")
        # One prediction before the first scrape, so the series exists from Prometheus's first sample on.
        assert request(web, "POST", "/api/v1/models/cancer/predict", body, headers)[0] == 200

        # The shipped scrape config, pointed at this gunicorn, scraping every second, with the labels Kubernetes
        # service discovery would add (the adapter's seriesQuery requires them).
        config = yaml.safe_load((ROOT / "platform" / "prometheus" / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(ROOT / "platform" / "prometheus" / "alerts.yml")]
        (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "modelworks-web"]
        assert job["authorization"] == {"credentials_file": "/run/secrets/metrics_token"}  # compose's secret
        assert request(web, "GET", "/metrics")[0] == 401
        (tmp_path / "metrics_token").write_text(token + "\n")
        job["authorization"]["credentials_file"] = str(tmp_path / "metrics_token")
        job["static_configs"] = [{"targets": [f"127.0.0.1:{web}"], "labels": {"namespace": "test", "pod": "web-0"}}]
        config["scrape_configs"] = [job]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = (tmp_path / "prometheus.log").open("w")
        logs.append(log)
        command = [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom}",
        ]
        processes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), False))
        series = 'modelworks_predictions_total{namespace="test",pod="web-0",outcome="ok"}'

        def scraped_three_times() -> bool:
            result = query(prom, f"count_over_time({series}[1m])")
            return bool(result) and int(result[0]["value"][1]) >= 3

        wait_for(scraped_three_times, 30, "three scrapes")
        assert query(prom, 'up{job="modelworks-web"}')[0]["value"][1] == "1"

        # A paced burst: `sent` predictions over ~6 s.
        sent, started = 0, time.monotonic()
        while time.monotonic() - started < 6:
            assert request(web, "POST", "/api/v1/models/cancer/predict", body, headers)[0] == 200
            sent += 1
            time.sleep(0.02)
        time.sleep(2.5)  # two more scrapes

        total = query(prom, f"sum({series})")[0]["value"][1]
        assert float(total) == sent + 1
        (result,) = query(prom, adapter_query("test", "web-0"))
        assert result["metric"] == {"pod": "web-0"}
        # rate over 1m = requests in the last minute / 60: the HPA sees the per-pod request rate.
        per_second = float(result["value"][1])
        assert sent / 60 * 0.75 < per_second < sent / 60 * 1.25, (per_second, sent)
    finally:
        for process, group in reversed(processes):
            stop(process, group)
        for log in logs:
            log.close()
