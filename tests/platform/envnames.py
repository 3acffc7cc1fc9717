"""The environment variables the platform reads: settings, gunicorn config and ASGI app, commands, worker exporter."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Read by libraries rather than our code: boto3 (S3 artifact storage) takes its credentials from these.
LIBRARY_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "DJANGO_SETTINGS_MODULE"}


def settings_env() -> set[str]:
    text = (ROOT / "config" / "settings.py").read_text(encoding="utf-8")
    names = set(re.findall(r"env_(?:str|bool|int|list|secret)\(\s*\"([A-Z0-9_]+)\"", text))
    secrets = set(re.findall(r"env_secret\(\s*\"([A-Z0-9_]+)\"", text))
    return names | {f"{name}_FILE" for name in secrets}


def gunicorn_env() -> set[str]:
    """The gunicorn config, its worker (config/web_worker.py: client timeouts) and the ASGI entry point it serves
    (config/asgi.py sizes Django's thread pool)."""
    text = (ROOT / "platform" / "gunicorn.conf.py").read_text(encoding="utf-8")
    text += (ROOT / "config" / "web_worker.py").read_text(encoding="utf-8")
    text += (ROOT / "config" / "asgi.py").read_text(encoding="utf-8")
    return set(re.findall(r"os\.environ\.(?:get|setdefault)\(\s*\"([A-Z0-9_]+)\"", text))


def command_env() -> set[str]:
    """Variables management commands read themselves (e.g. ensure_admin's MODELWORKS_ADMIN_USER)."""
    names: set[str] = set()
    for path in ROOT.glob("*/management/commands/*.py"):
        names |= set(re.findall(r"os\.environ\.get\(\s*\"([A-Z0-9_]+)\"", path.read_text(encoding="utf-8")))
    return names


def worker_env() -> set[str]:
    """Variables the Celery worker's metrics exporter reads (config/celery_metrics.py)."""
    text = (ROOT / "config" / "celery_metrics.py").read_text(encoding="utf-8")
    return set(re.findall(r"os\.environ\.get\(\s*\"([A-Z0-9_]+)\"", text))


def known_env() -> set[str]:
    return settings_env() | gunicorn_env() | command_env() | worker_env() | LIBRARY_ENV
