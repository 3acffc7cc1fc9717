"""Hung and stopped dependencies under load, against the platform as deployed (gunicorn with the ASGI front).

Each test runs its own Redis and Postgres (tests/platform/instances.py): a copy of the pytest database with
`cancer` in production, and a web worker on them, sent a steady stream of predictions by a client thread.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest

from serving.keys import api_key_create
from tests.platform.instances import SteadyLoad, own_postgres, own_redis, running_web
from tests.platform.processes import request, wait_for

PREDICT = "/api/v1/models/cancer/predict"
RATE = 25  # requests per second: modest, so that what slows answers is the fault, not the machine
HANG_SECONDS = 5
# An answer to a request sent while a dependency hangs may wait for a Redis socket timeout (100 ms) or the route
# read the processor waits for (250 ms) once, not for the hang: 2 s leaves room for a loaded two-core machine and
# is still well under the hang the request would otherwise wait out.
SLOWEST_ANSWER_SECONDS = 2.0

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}


def _metric(port: int, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels, from the worker's /metrics."""
    status, _, content = request(port, "GET", "/metrics")
    assert status == 200
    total = 0.0
    for line in content.decode().splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def _warm(port: int, key: str, body: bytes) -> None:
    """Answered once (the model loaded, its route read) and the key cache listening for revocations."""
    wait_for(lambda: request(port, "POST", PREDICT, body, _headers(key))[0] == 200, 30, "a first prediction")
    time.sleep(1.5)  # the key cache subscribes to revocations, then keeps keys in memory


def _assert_kept_answering(load: SteadyLoad, hung_from: float, hung_to: float) -> None:
    statuses = Counter(answer.status for answer in load.answers)
    assert set(statuses) == {200}, statuses  # bound: none; every dependency the request path uses is optional
    during = load.between(hung_from, hung_to)
    assert len(during) >= RATE * HANG_SECONDS * 0.5, len(during)  # the client kept sending: answers kept coming
    slowest = max(answer.done - answer.sent for answer in during)
    assert slowest < SLOWEST_ANSWER_SECONDS, f"an answer waited {slowest:.1f} s of the {HANG_SECONDS} s hang"


def test_predictions_keep_answering_while_redis_hangs(production_and_key, artifact_root, tmp_path):
    key, row = production_and_key
    body = json.dumps({"instances": [row]}).encode()  # one row, so that it is in the prediction cache (Redis)
    # The in-process level of the cache off, so that every request asks Redis (level 2): this is about Redis hanging
    # under the request path, not about answers that never leave the process.
    no_local_cache = {"MODELWORKS_PREDICTION_CACHE_LOCAL_MB": "0"}
    with own_postgres() as pg, own_redis() as redis_server:
        database = pg.copy_of_test_database("faults")
        with running_web(var=tmp_path / "web", artifact_root=artifact_root, database_url=database,
                         redis_url=redis_server.url, env=no_local_cache) as port:  # fmt: skip
            _warm(port, key, body)
            with SteadyLoad(port, PREDICT, body, _headers(key), rate=RATE) as load:
                time.sleep(1)
                hung_from = time.monotonic()
                redis_server.hang_for(HANG_SECONDS)
                hung_to = time.monotonic()
                time.sleep(1)
            skipped = _metric(port, "modelworks_cache_skipped_total")
    _assert_kept_answering(load, hung_from, hung_to)
    assert skipped > 0  # the back-off spared the processor thread most of the timeouts


def test_predictions_keep_answering_from_the_last_good_routes_while_postgres_hangs(
    production_and_key, artifact_root, tmp_path
):
    key, row = production_and_key
    body = json.dumps({"instances": [row]}).encode()
    with own_postgres() as pg, own_redis() as redis_server:
        database = pg.copy_of_test_database("faults")
        with running_web(var=tmp_path / "web", artifact_root=artifact_root, database_url=database,
                         redis_url=redis_server.url) as port:  # fmt: skip
            _warm(port, key, body)
            with SteadyLoad(port, PREDICT, body, _headers(key), rate=RATE) as load:
                time.sleep(1)
                hung_from = time.monotonic()
                pg.hang_for(HANG_SECONDS)
                hung_to = time.monotonic()
                time.sleep(1)
    _assert_kept_answering(load, hung_from, hung_to)


def test_a_postgres_outage_serves_the_last_good_routes_then_503s_that_are_counted(
    production_and_key, artifact_root, tmp_path
):
    key, row = production_and_key
    body = json.dumps({"instances": [row]}).encode()
    max_stale = 3
    with own_postgres() as pg, own_redis() as redis_server:
        database = pg.copy_of_test_database("faults")
        env = {"MODELWORKS_ROUTE_MAX_STALE_SECONDS": str(max_stale)}
        with running_web(var=tmp_path / "web", artifact_root=artifact_root, database_url=database,
                         redis_url=redis_server.url, env=env) as port:  # fmt: skip
            _warm(port, key, body)
            with SteadyLoad(port, PREDICT, body, _headers(key), rate=RATE) as load:
                time.sleep(1)
                pg.stop()
                stopped = time.monotonic()
                time.sleep(2)
                staleness = _metric(port, "modelworks_route_staleness_seconds")
                time.sleep(4)
                restarting = time.monotonic()
                pg.start()
                restarted = time.monotonic()
                wait_for(lambda: load.answers[-1].status == 200 and load.answers[-1].sent > restarted, 20,
                         "predictions answered again after the restart")  # fmt: skip
                time.sleep(1)  # routes read again: staleness back to 0
            errors = _metric(port, "modelworks_predictions_total", model="cancer", outcome="error")
            staleness_after = _metric(port, "modelworks_route_staleness_seconds")
        # gunicorn stopped cleanly: every prediction answered during the outage reached the log once it was back
        logged = int(pg.psql("faults", "SELECT count(*) FROM serving_predictionlog WHERE outcome = 'ok'").stdout)

    statuses = Counter(answer.status for answer in load.answers)
    assert set(statuses) <= {200, 503}, statuses  # never a 500
    # The last route read is at most a TTL (0.5 s) older than the stop: for ~2.5 s it is within the bound.
    early = load.between(stopped, stopped + max_stale - 1)
    assert early and {a.status for a in early} == {200}, Counter(a.status for a in early)
    late = load.between(stopped + max_stale + 1, restarting)
    assert late and {a.status for a in late} == {503}, Counter(a.status for a in late)
    assert all({k.lower(): v for k, v in a.headers.items()}.get("retry-after", "").isdigit() for a in late)
    assert max_stale >= staleness >= 1
    assert errors >= statuses[503] > 0  # each 503 is a counted prediction error (the error-rate alert sees them)
    assert staleness_after == 0
    assert logged == statuses[200] + 1  # and the warm-up's


def test_rate_limited_keys_answer_200_or_429_while_redis_is_down(production_and_key, artifact_root, tmp_path):
    _, row = production_and_key
    limited = api_key_create(name="limited", scopes=["predict:cancer"], rate_limit_per_second=5)[1]
    body = json.dumps({"instances": [row]}).encode()
    with own_postgres() as pg, own_redis() as redis_server:
        database = pg.copy_of_test_database("faults")
        with running_web(var=tmp_path / "web", artifact_root=artifact_root, database_url=database,
                         redis_url=redis_server.url) as port:  # fmt: skip
            _warm(port, limited, body)
            redis_server.stop()
            started = time.monotonic()
            statuses = Counter()
            while time.monotonic() - started < 3:
                statuses[request(port, "POST", PREDICT, body, _headers(limited))[0]] += 1
            local_checks = _metric(port, "modelworks_throttle_local_total")
    assert set(statuses) == {200, 429}, statuses  # limited per process, never a 500
    assert statuses[200] <= 5 * 4, statuses  # at most the limit in each of the (at most 4) one-second windows
    assert local_checks >= sum(statuses.values())
