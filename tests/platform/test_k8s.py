"""Kubernetes manifests: every file and both overlays, rendered by the real `kubectl kustomize`, validate offline
against the real schemas."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.platform.envnames import ROOT, known_env, settings_env

K8S = ROOT / "platform" / "k8s"
KUBECTL = shutil.which("kubectl")
# Pinned: the schema version kubernetes-validate ships and our manifests target.
K8S_VERSION = "1.30.0"
OVERLAYS = ["dev", "prod"]
PATCH_FILES = {K8S / "overlays" / name / patch for name in OVERLAYS for patch in ("web-resources.yaml", "config.yaml")}


if KUBECTL is None:  # never skip: a missing tool must fail the run, not hide these checks
    pytest.fail("kubectl is missing: run bin/ensure_tools.sh (make test does)", pytrace=False)


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def render(directory: Path) -> list[dict]:
    """The kustomization in `directory` rendered by kubectl's own kustomize (a failure fails the test, with its why)."""
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed (run bin/ensure_tools.sh): {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _by_kind(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, dict[tuple[str, str], dict]]:
    return request.param, _by_kind(render(K8S / "overlays" / request.param))


def test_every_manifest_file_validates():
    files = [
        path for path in sorted(K8S.rglob("*.yaml")) if path.name != "kustomization.yaml" and path not in PATCH_FILES
    ]
    assert len(files) >= 10
    for path in files:
        for doc in load_documents(path):
            _validate(doc)


def test_both_overlays_render_and_validate(rendered):
    name, docs = rendered
    kinds = {kind for kind, _ in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret"} <= kinds
    namespace = {"dev": "modelworks-dev", "prod": "modelworks"}[name]
    for doc in docs.values():
        _validate(doc)
        assert doc["metadata"]["namespace"] == namespace
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "modelworks"
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert container["image"] == f"ghcr.io/example/modelworks:{ {'dev': 'dev', 'prod': '0.1.0'}[name] }"


def test_the_hpa_is_exactly_the_seeds(rendered):
    _, docs = rendered
    hpa = docs[("HorizontalPodAutoscaler", "modelworks-web")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "modelworks-web"}
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["maxReplicas"] == 20
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "inference_requests_per_second"},
                "target": {"type": "AverageValue", "averageValue": "100"},
            },
        },
    ]


def test_web_probes_resources_and_graceful_shutdown(rendered):
    name, docs = rendered
    web = docs[("Deployment", "modelworks-web")]
    pod = web["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["gunicorn", "config.asgi:application", "-c", "platform/gunicorn.conf.py"]
    assert (ROOT / "platform" / "gunicorn.conf.py").is_file()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    expected_cpu = {"dev": "250m", "prod": "1"}[name]
    assert container["resources"]["requests"]["cpu"] == expected_cpu
    # preStop sleep (endpoints drop the pod) + gunicorn's graceful timeout must fit in the grace period.
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    config = docs[("ConfigMap", "modelworks-config")]["data"]
    assert pod["terminationGracePeriodSeconds"] > sleep + int(config["GUNICORN_GRACEFUL_TIMEOUT"])
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    service = docs[("Service", "modelworks-web")]
    assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
    pdb = docs[("PodDisruptionBudget", "modelworks-web")]
    assert pdb["spec"]["selector"]["matchLabels"] == web["spec"]["selector"]["matchLabels"]


def test_worker_and_a_single_beat(rendered):
    name, docs = rendered
    beat = docs[("Deployment", "modelworks-beat")]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert beat["spec"]["template"]["spec"]["containers"][0]["command"][:4] == ["celery", "-A", "config", "beat"]
    worker = docs[("Deployment", "modelworks-worker")]
    assert worker["spec"]["replicas"] == {"dev": 1, "prod": 4}[name]
    assert worker["spec"]["template"]["spec"]["containers"][0]["command"][:4] == ["celery", "-A", "config", "worker"]
    migrate = docs[("Job", "modelworks-migrate")]
    assert migrate["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "manage.py",
        "migrate",
        "--noinput",
    ]


def test_config_and_secret_keys_are_settings_the_platform_reads(rendered):
    _, docs = rendered
    known = known_env()
    config = docs[("ConfigMap", "modelworks-config")]["data"]
    secret = docs[("Secret", "modelworks-secrets")]["stringData"]
    assert set(config) <= known, set(config) - known
    assert set(secret) <= known, set(secret) - known
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"} <= set(secret) & settings_env()
    assert config["MODELWORKS_MAX_BODY_MB"] == "10"


def test_the_secret_template_does_not_start_as_shipped(rendered, tmp_path):
    """Its SECRET_KEY and scrape token are placeholders the platform refuses with DEBUG off, in one line."""
    import os
    import sys

    _, docs = rendered
    secret = docs[("Secret", "modelworks-secrets")]["stringData"]
    config = docs[("ConfigMap", "modelworks-config")]["data"]
    assert "MODELWORKS_METRICS_TOKEN" in secret
    platform = ("DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if k not in platform}
    env.update(DEBUG=config["DEBUG"], SECRET_KEY=secret["SECRET_KEY"], MODELWORKS_VAR_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode != 0
    assert "SECRET_KEY is a placeholder" in result.stderr.strip().splitlines()[-1]
    env["SECRET_KEY"] = "a-real-key-Zq8#pL2@vN5!xR7$wT4%yU6^aS3&dF9*gH1(jK0)"
    env["MODELWORKS_METRICS_TOKEN"] = secret["MODELWORKS_METRICS_TOKEN"]
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert "MODELWORKS_METRICS_TOKEN is a placeholder" in result.stderr.strip().splitlines()[-1]


def test_prometheus_adapter_rule_turns_the_counter_into_the_hpa_metric():
    (configmap,) = render(K8S / "prometheus-adapter")
    _validate(configmap)
    assert configmap["metadata"]["namespace"] == "monitoring"
    (rule,) = yaml.safe_load(configmap["data"]["config.yaml"])["rules"]
    assert rule["seriesQuery"].startswith("modelworks_predictions_total{")
    assert rule["name"] == {"matches": "^modelworks_predictions_total$", "as": "inference_requests_per_second"}
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert rule["metricsQuery"] == "sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)"


def test_the_base_keeps_the_placeholder_image():
    """An overlay rewrites only the name the base uses: the base keeps the placeholder `modelworks`."""
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert "images" not in base
    for doc in render(K8S / "base"):
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert container["image"] == "modelworks"


def test_batch_workers_consume_the_batch_queue_and_scale_on_its_depth(rendered):
    """Batch scoring has its own worker Deployment on the `batch` queue and its own HPA on that queue's depth, the
    external metric prometheus-adapter makes of modelworks_celery_queue_length (config/celery_metrics.py)."""
    from django.conf import settings

    _, docs = rendered
    worker = docs[("Deployment", "modelworks-batch-worker")]
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:4] == ["celery", "-A", "config", "worker"]
    assert command[command.index("-Q") + 1] == settings.MODELWORKS_BATCH_QUEUE == "batch"
    assert {"name": "MODELWORKS_BATCH_QUEUE", "value": "batch"} in container["env"]
    assert "-Q" not in docs[("Deployment", "modelworks-worker")]["spec"]["template"]["spec"]["containers"][0]["command"]
    hpa = docs[("HorizontalPodAutoscaler", "modelworks-batch-worker")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "modelworks-batch-worker"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"] == {
        "name": "celery_queue_length",
        "selector": {"matchLabels": {"queue": "batch"}},
    }
    (configmap,) = render(K8S / "prometheus-adapter")
    (rule,) = yaml.safe_load(configmap["data"]["config.yaml"])["externalRules"]
    assert rule["seriesQuery"].startswith("modelworks_celery_queue_length{")
    assert rule["name"]["as"] == "celery_queue_length"
