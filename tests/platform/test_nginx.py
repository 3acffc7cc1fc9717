"""A real nginx with platform/nginx/modelworks.conf in front of two real gunicorn processes of the app."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.platform.envnames import ROOT
from tests.platform.processes import free_port, refuses, request, start_gunicorn, stop, wait_for

CONF = ROOT / "platform" / "nginx" / "modelworks.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
PREDICT = "/api/v1/models/cancer/predict"

if NGINX is None:  # never skip: a missing tool must fail the run, not hide these checks
    pytest.fail("nginx is missing: run bin/ensure_tools.sh (make test does)", pytrace=False)


def self_signed(prefix: Path) -> Path:
    """A certificate and key for localhost, made by the real openssl, where the shipped config expects them."""
    tls = prefix / "tls"
    tls.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(tls / "tls.key"), "-out", str(tls / "tls.crt")],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return tls


def nginx_config(prefix: Path, listen: int, backends: list[int], tls_listen: int | None = None,
                 scrape_network: str = "127.0.0.0/8") -> Path:  # fmt: skip
    """The shipped config with only the upstream servers, the listen addresses, the certificate's directory and the
    scrape network's loopback line swapped for the test's."""
    conf = CONF.read_text(encoding="utf-8")
    assert conf.count("server web:8000 ") == 1 and conf.count("listen 80;") == 1 and conf.count("listen 443 ssl;") == 1
    assert conf.count("127.0.0.0/8    0;") == 1
    servers = "\n    ".join(f"server 127.0.0.1:{port} max_fails=3 fail_timeout=10s;" for port in backends)
    conf = re.sub(r"server web:8000 [^;]*;", servers, conf).replace("listen 80;", f"listen 127.0.0.1:{listen};")
    tls_listen = tls_listen or free_port()
    conf = conf.replace("listen 443 ssl;", f"listen 127.0.0.1:{tls_listen} ssl;")
    conf = conf.replace("/etc/nginx/tls/", f"{self_signed(prefix)}/")
    conf = conf.replace("127.0.0.0/8    0;", f"{scrape_network} 0;")
    (prefix / "modelworks.conf").write_text(conf, encoding="utf-8")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    user = "user root root;" if os.geteuid() == 0 else ""
    main = prefix / "nginx.conf"
    main.write_text(
        f"""daemon off;
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {prefix}/modelworks.conf;
}}
""",
        encoding="utf-8",
    )
    return main


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_nginx_balances_two_gunicorns_routes_around_a_dead_one_and_passes_the_request_id(
    production_and_key, artifact_root, tmp_path
):
    key, row = production_and_key
    backends = [free_port(), free_port()]
    listen = free_port()
    processes: list[tuple[subprocess.Popen, bool]] = []
    logs: list = []
    try:
        for index, port in enumerate(backends):
            processes.append((start_gunicorn(port, tmp_path / f"web{index}", artifact_root, logs), True))
        for port in backends:
            wait_for(lambda port=port: request(port, "GET", "/healthz")[0] == 200, 60, f"gunicorn on {port}")

        prefix = tmp_path / "nginx"
        prefix.mkdir()
        main = nginx_config(prefix, listen, backends)
        nginx_args = [NGINX, "-p", str(prefix), "-c", str(main), "-e", str(prefix / "error.log")]
        check = subprocess.run([*nginx_args, "-t"], capture_output=True, text=True, timeout=30, check=False)
        assert check.returncode == 0, check.stderr
        access = prefix / "access.log"
        nginx_log = access.open("w")
        logs.append(nginx_log)
        processes.append((subprocess.Popen(nginx_args, stdout=nginx_log, stderr=subprocess.STDOUT), False))
        wait_for(lambda: request(listen, "GET", "/nginx-healthz")[0] == 200, 20, "nginx")

        # Both gunicorns get traffic.
        for _ in range(20):
            assert request(listen, "GET", "/healthz")[0] == 200
        wait_for(lambda: access.read_text().count("GET /healthz") >= 20, 5, "nginx access log")
        served = {int(port) for port in re.findall(r"upstream=127\.0\.0\.1:(\d+)", access.read_text())}
        assert served == set(backends)

        # The client's request id reaches the app, which echoes it; without one, nginx makes one up.
        rid = f"nginx-{uuid.uuid4().hex[:16]}"
        body = json.dumps({"instances": [row]}).encode()
        headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json", "X-Request-ID": rid}
        status, response_headers, content = request(listen, "POST", PREDICT, body, headers)
        assert status == 200, content
        assert json.loads(content)["request_id"] == rid
        assert response_headers["X-Request-ID"] == rid
        generated = request(listen, "GET", "/healthz")[1]["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        gunicorn_logs = [tmp_path / f"web{index}" / "access.log" for index in range(2)]
        wait_for(lambda: any(f"rid={generated} " in p.read_text() for p in gunicorn_logs), 5, "gunicorn access log")

        # Over the body limit (10m, the app's MODELWORKS_MAX_BODY_MB): nginx answers 413 itself.
        assert request(listen, "POST", PREDICT, b"x" * (11 * 1024 * 1024), headers)[0] == 413

        # Kill one gunicorn (master and worker): every request still answers 200, predictions included.
        dead = processes[0][0]
        os.killpg(dead.pid, signal.SIGKILL)
        dead.wait(timeout=10)
        assert refuses(backends[0])
        before = access.read_text().count("upstream=")
        for _ in range(10):
            assert request(listen, "GET", "/healthz")[0] == 200
            status, _, content = request(listen, "POST", PREDICT, body, {**headers, "X-Request-ID": uuid.uuid4().hex})
            assert status == 200, content
        wait_for(lambda: access.read_text().count("upstream=") >= before + 20, 5, "nginx access log")
        assert f"upstream=127.0.0.1:{backends[1]}" in access.read_text()
    finally:
        for process, group in reversed(processes):
            stop(process, group)
        for log in logs:
            log.close()


def https(port: int, path: str, headers: dict | None = None, source: str = "127.0.0.1"):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the test's own self-signed certificate
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_nginx_terminates_tls_with_hsts_and_lets_only_the_scrape_network_reach_metrics(artifact_root, tmp_path):
    backend, listen, tls_listen = free_port(), free_port(), free_port()
    token = "scrape-" + "x7Kq2" * 8
    # The app itself: only the token (no allowed networks), as behind nginx in a deployment
    env = {"MODELWORKS_METRICS_TOKEN": token, "MODELWORKS_METRICS_ALLOWED_NETWORKS": ""}
    processes: list[tuple[subprocess.Popen, bool]] = []
    logs: list = []
    try:
        processes.append((start_gunicorn(backend, tmp_path / "web", artifact_root, logs, env=env), True))
        wait_for(lambda: request(backend, "GET", "/healthz")[0] == 200, 60, "gunicorn")
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        # The scrape network is 127.0.0.2 alone: the test scrapes from there, and is refused from 127.0.0.1.
        main = nginx_config(prefix, listen, [backend], tls_listen, scrape_network="127.0.0.2/32")
        nginx_args = [NGINX, "-p", str(prefix), "-c", str(main), "-e", str(prefix / "error.log")]
        check = subprocess.run([*nginx_args, "-t"], capture_output=True, text=True, timeout=30, check=False)
        assert check.returncode == 0, check.stderr
        log = (prefix / "access.log").open("w")
        logs.append(log)
        processes.append((subprocess.Popen(nginx_args, stdout=log, stderr=subprocess.STDOUT), False))
        wait_for(lambda: https(tls_listen, "/nginx-healthz")[0] == 200, 20, "nginx over TLS")

        status, headers, _ = https(tls_listen, "/healthz")
        assert status == 200
        assert headers["Strict-Transport-Security"] == "max-age=31536000"
        assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])
        assert "Strict-Transport-Security" not in request(listen, "GET", "/healthz")[1]  # not over plain HTTP

        bearer = {"Authorization": f"Bearer {token}"}
        for path in ("/metrics", "/metrics/monitoring"):
            # Outside the scrape network: nginx refuses, the token notwithstanding (plain and TLS alike).
            assert https(tls_listen, path, bearer)[0] == 403
            assert request(listen, "GET", path, headers=bearer)[0] == 403
            # From the scrape network: the app still wants the token.
            assert https(tls_listen, path, source="127.0.0.2")[0] == 401
            status, _, body = https(tls_listen, path, bearer, source="127.0.0.2")
            assert status == 200 and b"# HELP" in body
    finally:
        for process, group in reversed(processes):
            stop(process, group)
        for log in logs:
            log.close()
