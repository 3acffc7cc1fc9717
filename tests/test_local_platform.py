"""What `make run` leaves a person with: local settings that `python manage.py` finds by itself, the admin login and
its reset, and a demo API key that stays the same from run to run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from serving.keys import api_key_revoke, hash_key
from serving.models import ApiKey
from tests.serving.conftest import fresh_serving_state  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
PLATFORM_ENV = ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "SECRET_KEY_FILE", "MODELWORKS_MANAGE_REEXEC")


def shell_env(var: Path, **extra: str) -> dict[str, str]:
    """A new shell: nothing of the platform's exported, only where this test's var/ is."""
    env = {k: v for k, v in os.environ.items() if k not in PLATFORM_ENV}
    return {**env, "MODELWORKS_VAR_DIR": str(var), **extra}


def manage(args: list[str], env: dict[str, str], python: list[str] | None = None, cwd: Path = ROOT):
    return subprocess.run(
        [*(python or [sys.executable]), "manage.py", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


# --- (a) local settings ------------------------------------------------------------------------------------------


def test_manage_py_uses_make_runs_local_settings_and_production_still_needs_a_secret_key(tmp_path):
    var = tmp_path / "var"
    var.mkdir()
    refused = manage(["check"], shell_env(var))
    assert refused.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in refused.stderr

    (var / "local.env").write_text("# written by bin/run-platform\nDEBUG=1\n", encoding="utf-8")
    # `python` without Django (here: the interpreter with its site-packages switched off) re-runs itself with the
    # clone's .venv, as a person's system python does.
    works = manage(["check"], shell_env(var), python=[sys.executable, "-S"])
    assert works.returncode == 0, works.stderr
    assert "System check identified no issues" in works.stdout

    # A variable really set in the environment wins over the file.
    overridden = manage(["check"], shell_env(var, DEBUG="0"))
    assert overridden.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in overridden.stderr


def test_manage_py_without_django_or_a_venv_says_what_to_do_in_one_line(tmp_path):
    shutil.copy(ROOT / "manage.py", tmp_path / "manage.py")  # a clone where `make run` never ran: no .venv
    result = manage(["check"], shell_env(tmp_path / "var"), python=[sys.executable, "-S"], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Django is not installed for {sys.executable}: run `make run` first (it creates .venv)"
    ]


def test_a_malformed_local_env_names_the_file_and_line(tmp_path):
    var = tmp_path / "var"
    var.mkdir()
    (var / "local.env").write_text("DEBUG=1\nthis is not a setting\n", encoding="utf-8")
    result = manage(["check"], shell_env(var))
    assert result.returncode != 0
    assert f"{var / 'local.env'}, line 2: expected NAME=value" in result.stderr


# --- (c) the admin login -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_reset_password_prints_a_new_password_once_and_the_old_one_stops_working(client, capsys, monkeypatch):
    monkeypatch.delenv("MODELWORKS_ADMIN_PASSWORD", raising=False)
    call_command("ensure_admin")
    first = capsys.readouterr().out.split("password: ")[1].split()[0]

    call_command("ensure_admin")
    assert "`python manage.py ensure_admin --reset-password`" in capsys.readouterr().out

    call_command("ensure_admin", "--reset-password")
    out = capsys.readouterr().out
    assert "shown only once" in out
    second = out.split("password: ")[1].split()[0]
    assert second != first
    assert not client.login(username="admin", password=first)
    assert client.login(username="admin", password=second)
    assert client.get("/admin/").status_code == 200

    call_command("ensure_admin", "--porcelain")
    assert capsys.readouterr().out == "unchanged\tadmin\t\n"


@pytest.mark.django_db
def test_reset_password_takes_the_password_from_the_environment_and_refuses_a_weak_one(client, capsys, monkeypatch):
    monkeypatch.setenv("MODELWORKS_ADMIN_PASSWORD", "first-Chosen-passphrase-7")
    call_command("ensure_admin")
    monkeypatch.setenv("MODELWORKS_ADMIN_PASSWORD", "admin")
    with pytest.raises(CommandError, match="^MODELWORKS_ADMIN_PASSWORD: .*This password is too short"):
        call_command("ensure_admin", "--reset-password")
    assert client.login(username="admin", password="first-Chosen-passphrase-7")  # nothing changed

    monkeypatch.setenv("MODELWORKS_ADMIN_PASSWORD", "second-Chosen-passphrase-8")
    capsys.readouterr()
    call_command("ensure_admin", "--reset-password", "--porcelain")
    assert capsys.readouterr().out == "reset\tadmin\t\n"  # chosen, so not printed
    assert client.login(username="admin", password="second-Chosen-passphrase-8")


# --- (d) the demo API key ----------------------------------------------------------------------------------------


def models_list(raw: str) -> int:
    return Client(HTTP_AUTHORIZATION=f"Api-Key {raw}").get("/api/v1/models/").status_code


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_serving_state")
def test_demo_api_key_is_created_once_and_replaced_when_revoked(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("demo_api_key")
    raw = capsys.readouterr().out.strip()
    stored = tmp_path / "demo-api-key"
    assert stored.read_text().strip() == raw and raw.startswith("mwk_")
    assert stored.stat().st_mode & 0o777 == 0o600
    key = ApiKey.objects.get(key_hash=hash_key(raw))
    assert sorted(key.scopes) == ["deploy:*", "predict:*", "registry:read", "registry:write"]
    assert models_list(raw) == 200

    call_command("demo_api_key")  # every later run prints the same key
    assert capsys.readouterr().out.strip() == raw
    assert ApiKey.objects.count() == 1

    api_key_revoke(key=key)
    assert models_list(raw) == 401
    call_command("demo_api_key")
    renewed = capsys.readouterr().out.strip()
    assert renewed != raw and stored.read_text().strip() == renewed
    assert stored.stat().st_mode & 0o777 == 0o600
    assert models_list(renewed) == 200
