"""Real processes for the platform tests: gunicorn on the pytest database, and small HTTP helpers."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.platform.envnames import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def refuses(port: int) -> bool:
    try:
        request(port, "GET", "/healthz")
    except ConnectionError:
        return True
    return False


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def stop(process: subprocess.Popen, group: bool) -> None:
    """TERM (the whole gunicorn process group we started), then KILL if it lingers."""
    if process.poll() is not None:
        return
    if group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait(timeout=5)


def start_gunicorn(
    port: int,
    var: Path,
    artifact_root: Path,
    logs: list,
    workers: int = 1,
    access_format: str = "rid=%({x-request-id}i)s %(m)s %(U)s %(s)s",
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """gunicorn with platform/gunicorn.conf.py in its own process group (so the test can kill master and workers)."""
    db = connection.settings_dict
    var.mkdir()
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "ARTIFACT_ROOT": str(artifact_root),
        "MODELWORKS_VAR_DIR": str(var),
        "PROMETHEUS_MULTIPROC_DIR": str(var / "prometheus"),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_THREADS": "4",
        "GUNICORN_ACCESSLOG": str(var / "access.log"),
        **(env or {}),
    }
    log = (var / "gunicorn.log").open("w")
    logs.append(log)
    command = [sys.executable, "-m", "gunicorn", "config.asgi:application", "-c", "platform/gunicorn.conf.py"]
    command += ["--access-logformat", access_format]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
