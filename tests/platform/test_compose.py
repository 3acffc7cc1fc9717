"""docker-compose.yml, the Dockerfile and .env.example, checked without docker (it does not run on these machines)."""

from __future__ import annotations

import re
import shlex

import yaml
from django.core.management import get_commands

from tests.platform.envnames import ROOT, known_env

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]
APP_SERVICES = {name for name, service in SERVICES.items() if "build" in service}
# Variables that only feed docker-compose.yml itself (interpolation), never the app's settings.
COMPOSE_ONLY = {
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "GRAFANA_ADMIN_PASSWORD",
    "HTTP_PORT",
    "HTTPS_PORT",
    "MODELWORKS_TAG",
}


def _check_command(argv: list[str]) -> None:
    if argv[:2] == ["sh", "-c"]:
        for part in argv[2].split("&&"):
            _check_command(shlex.split(part))
        return
    if argv[0] == "gunicorn":
        module, _, attribute = argv[1].partition(":")
        source = ROOT / (module.replace(".", "/") + ".py")
        assert f"{attribute} =" in source.read_text(encoding="utf-8"), argv
        assert (ROOT / argv[argv.index("-c") + 1]).is_file(), argv
    elif argv[0] == "celery":
        assert argv[1:3] == ["-A", "config"] and (ROOT / "config" / "celery.py").is_file(), argv
        assert argv[3] in {"worker", "beat"}, argv
    elif argv[:2] == ["python", "manage.py"]:
        assert argv[2] in get_commands(), f"no management command {argv[2]!r}"
    else:
        raise AssertionError(f"unknown command {argv}")


def test_the_whole_stack_is_there_with_health_checks():
    assert set(SERVICES) == {"postgres", "redis", "migrate", "web", "worker", "beat", "nginx", "prometheus", "grafana"}
    assert {"migrate", "web", "worker", "beat"} == APP_SERVICES
    for name, service in SERVICES.items():
        if name == "migrate":  # a one-shot job: it exits, the others wait for it to succeed
            continue
        assert service["healthcheck"]["test"], name
    assert SERVICES["web"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert SERVICES["nginx"]["depends_on"]["web"]["condition"] == "service_healthy"


def test_every_app_command_exists_in_the_project():
    for name in APP_SERVICES:
        _check_command(SERVICES[name]["command"])
    assert SERVICES["web"]["command"] == ["gunicorn", "config.asgi:application", "-c", "platform/gunicorn.conf.py"]


def test_every_app_env_var_is_one_the_platform_reads():
    known = known_env()
    for name in APP_SERVICES:
        environment = SERVICES[name]["environment"]
        assert set(environment) <= known, (name, set(environment) - known)
    assert SERVICES["web"]["environment"]["GUNICORN_BIND"] == "0.0.0.0:8000"
    assert SERVICES["web"]["environment"]["MODELWORKS_MAX_BODY_MB"] == "10"


def test_env_example_covers_what_compose_requires():
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert example <= known_env() | COMPOSE_ONLY, example - known_env() - COMPOSE_ONLY
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert required <= example, required - example
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert interpolated <= known_env() | COMPOSE_ONLY, interpolated - known_env() - COMPOSE_ONLY


def test_volumes_and_mounts():
    assert {"pgdata", "artifacts"} <= set(COMPOSE["volumes"])
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    for name in APP_SERVICES:
        assert "artifacts:/var/lib/modelworks/artifacts" in SERVICES[name]["volumes"]
        assert SERVICES[name]["environment"]["ARTIFACT_ROOT"] == "/var/lib/modelworks/artifacts"
    for name, service in SERVICES.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, mount)
            else:
                assert source in COMPOSE["volumes"], (name, mount)


def test_nginx_and_prometheus_point_at_the_web_service():
    port = SERVICES["web"]["environment"]["GUNICORN_BIND"].rsplit(":", 1)[1]
    assert f"server web:{port} " in (ROOT / "platform" / "nginx" / "modelworks.conf").read_text(encoding="utf-8")
    prometheus = yaml.safe_load((ROOT / "platform" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = [t for job in prometheus["scrape_configs"] for c in job.get("static_configs", []) for t in c["targets"]]
    assert f"web:{port}" in targets


def test_prometheus_sends_the_scrape_token_the_app_is_given():
    prometheus = yaml.safe_load((ROOT / "platform" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    secret = COMPOSE["secrets"]["metrics_token"]
    assert secret == {"environment": "MODELWORKS_METRICS_TOKEN"}
    assert "metrics_token" in SERVICES["prometheus"]["secrets"]
    for name in ("modelworks-web", "modelworks-monitoring"):
        assert jobs[name]["authorization"] == {"credentials_file": "/run/secrets/metrics_token"}
    for name in APP_SERVICES:
        assert SERVICES[name]["environment"]["MODELWORKS_METRICS_TOKEN"].startswith("${MODELWORKS_METRICS_TOKEN:?")


def test_nginx_gets_its_certificate_and_the_tls_port():
    assert "./platform/nginx/tls:/etc/nginx/tls:ro" in SERVICES["nginx"]["volumes"]
    assert "${HTTPS_PORT:-8443}:443" in SERVICES["nginx"]["ports"]


def test_dockerfile_is_non_root_slim_and_starts_gunicorn():
    dockerfile = (ROOT / "platform" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.\d+-slim", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}
    # The dependency layer comes from pyproject.toml alone, before the source is copied.
    assert dockerfile.index("COPY pyproject.toml") < dockerfile.index("pip install") < dockerfile.index("COPY . .")
    assert "manage.py collectstatic" in dockerfile
    assert 'CMD ["gunicorn", "config.asgi:application", "-c", "platform/gunicorn.conf.py"]' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for needed in ("platform/gunicorn.conf.py", "manage.py", "config", "pyproject.toml"):
        assert needed not in ignored
    assert ".venv" in ignored and ".env" in ignored
