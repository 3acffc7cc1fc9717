"""Configuration by environment: the embedded default `make run` uses, and production's deploy check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLATFORM_ENV = ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "ARTIFACT_STORAGE")


def run(args: list[str], env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PLATFORM_ENV}
    return {**env, "MODELWORKS_VAR_DIR": str(tmp_path / "var"), **extra}


def test_with_nothing_set_the_platform_runs_embedded(tmp_path):
    """No DATABASE_URL and no REDIS_URL: a database file under var/, local-memory cache, filesystem broker."""
    probe = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.DATABASES['default']['ENGINE'], str(s.DATABASES['default']['NAME']), "
        "s.CACHES['default']['BACKEND'], s.CELERY_BROKER_URL, s.STORAGES['artifacts']['OPTIONS']['location']]))"
    )
    result = run(["-c", probe], bare_env(tmp_path, DEBUG="1", DJANGO_SETTINGS_MODULE="config.settings"))
    assert result.returncode == 0, result.stderr
    engine, name, cache, broker, artifacts = json.loads(result.stdout)
    var = str(tmp_path / "var")
    assert name.startswith(var) and engine.rsplit(".", 1)[-1] != "postgresql"
    assert cache.endswith("LocMemCache")
    assert broker == "filesystem://"
    assert artifacts == f"{var}/artifacts"
    assert (tmp_path / "var" / "secret_key").exists()


def test_embedded_worker_runs_tasks_with_no_redis(tmp_path):
    """What `make run` starts on a fresh machine: migrate, seed, and a worker on the filesystem broker."""
    env = bare_env(tmp_path, DEBUG="1")
    for command in (["manage.py", "migrate", "-v0"], ["manage.py", "seed_demo"]):
        result = run(command, env, timeout=300)
        assert result.returncode == 0, result.stderr
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        sweep = "from registry.tasks import verify_all_artifacts as t; print(t.delay().get(timeout=60))"
        result = run(["manage.py", "shell", "-c", sweep], env)
        assert result.returncode == 0, result.stderr
        # + the demo challengers and the feature store's by-patient model
        assert result.stdout.strip().splitlines()[-1] == "{'checked': 6, 'failed': 0}"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return bare_env(
        tmp_path,
        DEBUG="0",
        SECRET_KEY="k" * 20 + "Zq8#pL2@vN5!xR7$wT4%yU6^aS3&dF9*gH1(jK0)",
        ALLOWED_HOSTS="models.example.com",
        DATABASE_URL=os.environ["DATABASE_URL"],
        REDIS_URL=os.environ["REDIS_URL"],
        **extra,
    )


def test_deploy_check_reports_only_what_the_readme_explains(tmp_path):
    result = run(["manage.py", "check", "--deploy"], production_env(tmp_path))
    reported = {word.strip(":()") for word in result.stderr.split() if word.startswith("(security.")}
    assert reported == {"security.W004"}, result.stderr
    readme = (ROOT / "README.md").read_text()
    assert "security.W004" in readme and "SECURE_HSTS_SECONDS" in readme


def test_deploy_check_is_clean_once_hsts_is_on(tmp_path):
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                 production_env(tmp_path, SECURE_HSTS_SECONDS="31536000", SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
                                SECURE_HSTS_PRELOAD="1"))  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "0"}, "SECRET_KEY must be set when DEBUG is off"),
        ({"DEBUG": "0", "SECRET_KEY": "change-me"}, "SECRET_KEY is a placeholder ('change-me'...): set a long random"),
        ({"DEBUG": "0", "SECRET_KEY": "change-me-to-a-long-random-string"}, "SECRET_KEY is a placeholder"),
        ({"DEBUG": "0", "SECRET_KEY": "django-insecure-abc123xyz"}, "SECRET_KEY is a placeholder"),
        ({"DEBUG": "0", "SECRET_KEY": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, "SECRET_KEY is a placeholder"),
        (
            {"DEBUG": "0", "SECRET_KEY": "a-real-key-Zq8#pL2@vN5!xR7$wT4%", "MODELWORKS_METRICS_TOKEN": "change-me"},
            "MODELWORKS_METRICS_TOKEN is a placeholder",
        ),
        ({"DEBUG": "1", "MODELWORKS_TOKEN_TTL": "a month"}, "MODELWORKS_TOKEN_TTL: 'a month' is not a duration"),
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"DEBUG": "1", "ARTIFACT_STORAGE": "ftp"}, "ARTIFACT_STORAGE='ftp': use local, s3 or azure"),
        (
            {"DEBUG": "1", "MODELWORKS_WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/8,localhost"},
            "MODELWORKS_WEBHOOK_ALLOWED_NETWORKS: 'localhost' is not a network",
        ),
        (
            {"DEBUG": "1", "MODELWORKS_VERIFY_ARTIFACTS_EVERY_S": "5400"},
            "MODELWORKS_VERIFY_ARTIFACTS_EVERY_S=5400: a period of an hour or more must be",
        ),
    ],
)
def test_bad_configuration_fails_with_one_clear_reason(tmp_path, env, message):
    result = run(["manage.py", "check"], bare_env(tmp_path, **env))
    assert result.returncode != 0
    assert message in result.stderr


def test_the_token_ttl_and_the_lockout_read_durations(tmp_path):
    probe = ("import django; django.setup(); from django.conf import settings as s; "
             "print(s.REST_KNOX['TOKEN_TTL'].total_seconds(), s.AXES_COOLOFF_TIME.total_seconds())")  # fmt: skip
    env = bare_env(tmp_path, DEBUG="1", DJANGO_SETTINGS_MODULE="config.settings", MODELWORKS_TOKEN_TTL="12h",
                   MODELWORKS_LOGIN_LOCKOUT="90m")  # fmt: skip
    result = run(["-c", probe], env)
    assert result.stdout.split() == ["43200.0", "5400.0"], result.stderr


def test_secret_key_can_come_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-mounted-secret-file\n")
    probe = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    env = bare_env(tmp_path, DEBUG="0", SECRET_KEY_FILE=str(secret), DJANGO_SETTINGS_MODULE="config.settings")
    result = run(["-c", probe], env)
    assert result.stdout.strip() == "from-a-mounted-secret-file", result.stderr
