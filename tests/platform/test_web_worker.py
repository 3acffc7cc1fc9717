"""Keep-alive connections spread evenly over gunicorn's workers (config/web_worker.py)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections import Counter

import pytest

from config.web_worker import excess
from registry.models import RegisteredModel
from serving.tokens import user_token_create
from tests.platform.processes import free_port, request, start_gunicorn, stop, wait_for


def test_only_a_worker_over_its_share_sheds_and_a_balanced_pair_stays_put():
    assert excess(51, {1: 51, 2: 13}) == 18  # fair share 32, one connection of slack
    assert excess(13, {1: 51, 2: 13}) == 0
    assert excess(33, {1: 33, 2: 31}) == 0 and excess(31, {1: 33, 2: 31}) == 0
    assert excess(5, {1: 5}) == 0  # a lone worker has nothing to shed to
    assert excess(10, {1: 10, 2: 0, 3: 0}) == 5  # a worker just started counts too


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_connections_opened_in_a_burst_end_up_spread_over_the_workers(production_and_key, artifact_root, tmp_path):
    port = free_port()
    logs: list = []
    web = start_gunicorn(port, tmp_path / "web", artifact_root, logs, workers=2,
                         access_format="rid=%({x-request-id}i)s pid=%(p)s")  # fmt: skip
    connections = 24
    try:
        wait_for(lambda: request(port, "GET", "/healthz")[0] == 200, 60, "gunicorn")
        time.sleep(1)  # both workers up and publishing their counts
        start = threading.Barrier(connections)
        closes = Counter()
        failures: list[BaseException] = []

        def client(index: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                start.wait()
                deadline = time.monotonic() + 6
                sent = 0
                while time.monotonic() < deadline:
                    rid = f"first-{index}" if sent == 0 else f"c{index}-{sent}"
                    conn.request("GET", "/healthz", headers={"X-Request-ID": rid})
                    response = conn.getresponse()
                    response.read()
                    assert response.status == 200
                    if response.getheader("connection", "").lower() == "close":
                        closes[index] += 1  # http.client reconnects on the next request
                    sent += 1
                conn.request("GET", "/healthz", headers={"X-Request-ID": f"final-{index}"})
                assert conn.getresponse().read()
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                failures.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not failures, failures[:3]

        access = tmp_path / "web" / "access.log"
        wait_for(lambda: access.read_text().count("rid=final-") == connections, 10, "the access log")
        text = access.read_text()
        first = Counter(re.findall(r"rid=first-\d+ pid=<(\d+)>", text))
        final = Counter(re.findall(r"rid=final-\d+ pid=<(\d+)>", text))
        assert len(final) == 2 and max(final.values()) <= connections // 2 + 1, (first, final)
        if max(first.values()) > connections // 2 + 1:  # the burst landed unevenly: the heavy worker shed
            assert sum(closes.values()) >= max(first.values()) - (connections // 2 + 1)
    finally:
        stop(web, True)
        for log in logs:
            log.close()


# ------------------------------------------------------------------------- slow and idle clients, the connection cap

SHORT_LIMITS = {
    "GUNICORN_KEEPALIVE": "1",
    "GUNICORN_HEADER_TIMEOUT": "1",
    "GUNICORN_BODY_TIMEOUT": "2",
    "GUNICORN_BODY_MIN_RATE": "2000",
    "GUNICORN_MAX_HEADER_BYTES": "100000",
}
GIVE_UP = 8.0  # seconds: without the limits, every slow client below would still be connected by then


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _until_closed(sock: socket.socket, send: bytes = b"", every: float = 0.25) -> tuple[bytes, float | None]:
    """Read until the server closes the connection, sending `send` (if any) every `every` seconds meanwhile: what the
    server sent, and after how many seconds it closed (None: still open after GIVE_UP seconds)."""
    started, received = time.monotonic(), b""
    sock.settimeout(every)
    while time.monotonic() - started < GIVE_UP:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if send:
                try:
                    sock.sendall(send)
                except OSError:
                    return received, time.monotonic() - started  # closed while we were sending
            continue
        except ConnectionResetError:
            return received, time.monotonic() - started
        if not chunk:
            return received, time.monotonic() - started
        received += chunk
    return received, None


def _metric(port: int, name: str, **labels: str) -> float:
    """A sample of the web process's /metrics (all workers merged), 0 when absent."""
    text = request(port, "GET", "/metrics")[2].decode()
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.fixture
def limited_web(production_and_key, artifact_root, tmp_path):
    port = free_port()
    logs: list = []
    web = start_gunicorn(port, tmp_path / "web", artifact_root, logs, env=SHORT_LIMITS)
    try:
        wait_for(lambda: request(port, "GET", "/healthz")[0] == 200, 60, "gunicorn")
        yield port, production_and_key
    finally:
        stop(web, True)
        for log in logs:
            log.close()


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_idle_connections_and_slow_headers_are_closed_in_time(limited_web):
    port, _ = limited_web
    with _connect(port) as silent:  # connects and never sends a byte
        assert _until_closed(silent)[1] is not None
    with _connect(port) as blank:  # sends nothing but blank lines, which begin no request
        assert _until_closed(blank, send=b"\r\n")[1] is not None
    with _connect(port) as kept:  # one request, then idle on a keep-alive connection
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer, closed = _until_closed(kept)
        assert _status(answer) == 200 and closed is not None
    with _connect(port) as slow:  # headers a byte at a time
        slow.sendall(b"POST /api/v1/models/cancer/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: ")
        answer, closed = _until_closed(slow, send=b"k")
        assert closed is not None and _status(answer) == 408, answer
    assert _metric(port, "modelworks_http_client_refusals_total", reason="header_timeout") == 1
    with _connect(port) as large:  # headers without end, sent as fast as the worker reads them
        large.sendall(b"POST /api/v1/models/cancer/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: ")
        answer, closed = _until_closed(large, send=b"k" * 16_384, every=0.01)
        assert closed is not None and _status(answer) == 431, answer


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_a_slow_body_is_answered_408_and_lets_go_of_the_thread_reading_it(limited_web, staff):
    port, (key, row) = limited_web
    head = "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {type}\r\nContent-Length: 1000\r\n{auth}\r\n"
    with _connect(port) as slow:  # to the front: a body a byte every quarter second (4 B/s, under 2,000 B/s)
        front = head.format(path="/api/v1/models/cancer/predict", type="application/json", auth="X-Api-Key: x\r\n")
        slow.sendall(front.encode() + b'{"inputs"')
        answer, closed = _until_closed(slow, send=b" ")
        assert closed is not None and _status(answer) == 408, answer
    # To Django: as many stalled bodies as it has threads (GUNICORN_THREADS=4), each blocked reading its form.
    stalled = [_connect(port) for _ in range(4)]
    try:
        for sock in stalled:
            cookie = "Cookie: csrftoken=" + "c" * 32 + "\r\n"  # so that the CSRF check reads the form
            admin = head.format(path="/admin/login/", type="application/x-www-form-urlencoded", auth=cookie)
            sock.sendall(admin.encode() + b"username=a")
        for sock in stalled:
            answer, closed = _until_closed(sock)
            assert closed is not None and _status(answer) == 408, answer
    finally:
        for sock in stalled:
            sock.close()
    assert request(port, "GET", "/healthz")[0] == 200  # Django's threads are free again
    assert _metric(port, "modelworks_http_client_refusals_total", reason="body_timeout") == 5

    # What Django read of a body that timed out is not taken for the whole body: nothing is written from it.
    token = user_token_create(user=staff)[1]
    with _connect(port) as cut:
        api = head.format(path="/api/v1/models/", type="application/x-www-form-urlencoded",
                          auth=f"Authorization: Token {token}\r\n")  # fmt: skip
        cut.sendall(api.encode() + b"name=cut-short&task=classification")
        answer, closed = _until_closed(cut)
        assert closed is not None and _status(answer) == 408, answer
    time.sleep(1)  # Django's thread has had the (truncated) body for a while
    assert not RegisteredModel.objects.filter(name="cut-short").exists()

    # A large body arriving slower than the body timeout allows, but above the minimum rate, is answered.
    body = json.dumps({"instances": [row]}).encode() + b" " * 11_000
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:

        def chunks():
            for start in range(0, len(body), 400):
                time.sleep(0.1)  # about 4,000 B/s: three seconds for the whole body
                yield body[start : start + 400]

        started = time.monotonic()
        conn.putrequest("POST", "/api/v1/models/cancer/predict")
        for name, value in {
            "X-Api-Key": key,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        }.items():
            conn.putheader(name, value)
        conn.endheaders()
        for chunk in chunks():
            conn.send(chunk)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        assert time.monotonic() - started > 2  # it did take longer than the body timeout
        assert json.loads(response.read())["predictions"]
        assert _metric(port, "modelworks_http_responses_total", handler="predict", code="200") == 1
    finally:
        conn.close()


@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_beyond_the_connection_cap_requests_are_answered_503(production_and_key, artifact_root, tmp_path):
    port = free_port()
    logs: list = []
    web = start_gunicorn(port, tmp_path / "web", artifact_root, logs,
                         env={"GUNICORN_WORKER_CONNECTIONS": "3", "GUNICORN_KEEPALIVE": "30"})  # fmt: skip
    held: list[http.client.HTTPConnection] = []
    try:
        wait_for(lambda: request(port, "GET", "/healthz")[0] == 200, 60, "gunicorn")
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert response.status == 200 and response.read()
            held.append(conn)  # kept open, idle
        assert request(port, "GET", "/healthz")[0] == 503
        held.pop().close()
        wait_for(lambda: request(port, "GET", "/healthz")[0] == 200, 5, "a free connection")
        assert _metric(port, "modelworks_http_client_refusals_total", reason="connection_limit") >= 1
        for conn in held:  # the connections within the cap keep being served
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200
    finally:
        for conn in held:
            conn.close()
        stop(web, True)
        for log in logs:
            log.close()
