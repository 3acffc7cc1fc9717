"""A clean stop of the web process as deployed (gunicorn's master signalled; config/web_worker.py,
platform/gunicorn.conf.py): its workers write the prediction log's last rows and leave the merged /metrics."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from pathlib import Path

import pytest

from serving.models import PredictionLog
from tests.platform.processes import free_port, refuses, request, start_gunicorn, stop, wait_for

PREDICT = "/api/v1/models/cancer/predict"
# Flushes far apart, so every row in the log after the stop was written by the workers on their way out.
STOP_ENV = {"MODELWORKS_LOG_FLUSH_MS": "600000", "GUNICORN_GRACEFUL_TIMEOUT": "10"}


def _live_gauge_pids(metrics_dir: Path) -> set[int]:
    """The processes whose live gauges (prometheus_client's livesum/livemax files) /metrics still merges."""
    return {int(m.group(1)) for f in metrics_dir.iterdir() if (m := re.fullmatch(r"gauge_live\w+?_(\d+)\.db", f.name))}


def _start_in_flight(port: int, key: str, body: bytes) -> socket.socket:
    """A prediction request whose headers and half its body are sent: in flight until the rest comes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (f"POST {PREDICT} HTTP/1.1\r\nHost: test\r\nX-Api-Key: {key}\r\nX-Request-ID: stop-in-flight\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
    sock.sendall(head.encode() + body[: len(body) // 2])
    return sock


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_master_stops_with_every_prediction_logged_and_its_workers_metrics_retired(
    sig, production_and_key, artifact_root, tmp_path
):
    key, row = production_and_key
    body = json.dumps({"instances": [row]}).encode()
    port = free_port()
    logs: list = []
    web = start_gunicorn(port, tmp_path / "web", artifact_root, logs, workers=2, env=STOP_ENV)
    metrics_dir = tmp_path / "web" / "prometheus"
    sent = [f"stop-{i}" for i in range(20)]
    try:
        wait_for(lambda: request(port, "GET", "/healthz")[0] == 200, 60, "gunicorn")
        headers = {"X-Api-Key": key, "Content-Type": "application/json"}
        for rid in sent:
            status, _, content = request(port, "POST", PREDICT, body, {**headers, "X-Request-ID": rid})
            assert status == 200, content
        graceful = sig == signal.SIGTERM  # SIGINT (and SIGQUIT) is gunicorn's quick stop: no waiting for requests
        in_flight = _start_in_flight(port, key, body) if graceful else None
        logging_workers = _live_gauge_pids(metrics_dir)  # the log buffer's depth is a live gauge
        assert logging_workers and os.getpid() not in logging_workers
        os.kill(web.pid, sig)
        if in_flight is not None:
            with in_flight:
                wait_for(lambda: refuses(port), 10, "the workers to stop accepting connections")
                in_flight.sendall(body[len(body) // 2 :])
                answer = in_flight.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer  # answered before the worker went
            sent.append("stop-in-flight")
        web.wait(timeout=30)
    finally:
        stop(web, True)
        for log in logs:
            log.close()
    output = (tmp_path / "web" / "gunicorn.log").read_text()
    assert web.returncode == 0 and "SIGKILL" not in output, output[-3000:]
    logged = PredictionLog.objects.filter(request_id__startswith="stop-").values_list("request_id", flat=True)
    assert sorted(logged) == sorted(sent)
    assert not _live_gauge_pids(metrics_dir) & logging_workers  # gone from the merged /metrics
