"""Keep-alive connections spread evenly over gunicorn's workers (config/web_worker.py)."""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections import Counter

import pytest

from config.web_worker import excess
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
