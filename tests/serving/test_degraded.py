"""Serving with a dependency away: the last good routes while the database is, the cache skipped while Redis is.

The database goes away for real: the connection is closed and its settings point at a port nothing listens on, so
every query fails as it does when Postgres is down. Redis is the test's own server (tests/platform/instances.py),
hung with SIGSTOP or stopped.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis
from django.core.cache import cache
from django.test import Client
from prometheus_client import REGISTRY

from config.cache import CacheUnavailable
from serving import key_cache, routing
from serving.key_cache import key_cache as process_key_cache
from serving.keys import api_key_lookup, throttle_retry_after
from serving.models import ApiKey
from tests.platform.instances import own_redis
from tests.serving.conftest import make_key, post, rows_of

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/models/cancer/predict"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def on_processor_thread(call):
    """`call()` on a thread named as serving/front.py's request processor; its result or exception."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=routing.PROCESSOR_THREAD)
    thread.start()
    thread.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_routes_read_before_an_outage_keep_serving_until_they_are_too_old(production, database, settings):
    settings.MODELWORKS_ROUTE_TTL_MS = 0  # every lookup asks the database
    assert routing.resolve("cancer").version.pk == production.pk
    assert routing.staleness_seconds() == 0
    database.away()
    assert routing.resolve("cancer").version.pk == production.pk  # the last good route
    assert routing.staleness_seconds() > 0
    assert sample("modelworks_route_staleness_seconds") > 0
    with pytest.raises(routing.RouteUnavailable) as never_read:
        routing.resolve("cancer", alias="champion")
    assert never_read.value.status == 503
    settings.MODELWORKS_ROUTE_MAX_STALE_SECONDS = 0
    with pytest.raises(routing.RouteUnavailable, match="routes older than 0 s"):
        routing.resolve("cancer")
    database.back()
    assert routing.resolve("cancer").version.pk == production.pk
    assert routing.staleness_seconds() == 0
    assert sample("modelworks_route_staleness_seconds") == 0


def test_the_request_processor_serves_the_last_good_route_while_the_database_is_away(production, database, settings):
    settings.MODELWORKS_ROUTE_TTL_MS = 0
    assert on_processor_thread(lambda: routing.resolve("cancer")).version.pk == production.pk  # read in background
    database.away()
    assert on_processor_thread(lambda: routing.resolve("cancer")).version.pk == production.pk
    assert routing.staleness_seconds() > 0
    with pytest.raises(routing.RouteUnavailable):
        on_processor_thread(lambda: routing.resolve("cancer", version=7))
    database.back()
    time.sleep(0.1)
    assert on_processor_thread(lambda: routing.resolve("cancer")).version.pk == production.pk
    assert routing.staleness_seconds() == 0


def test_predictions_while_the_database_is_away_answer_then_503_with_retry_after_and_are_counted(
    production, logreg, database, settings
):
    settings.MODELWORKS_ROUTE_TTL_MS = 0
    key = make_key("predict:cancer")
    assert process_key_cache().wait_until_subscribed(5)  # so that the key is kept in memory
    caller = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
    body = {"instances": rows_of(logreg.X_test, 2)}
    assert post(Client(), URL, body, **caller).status_code == 200
    errors = sample("modelworks_predictions_total", model="cancer", version="", outcome="error")

    database.away()
    answered = post(Client(), URL, body, **caller)
    assert answered.status_code == 200, answered.content
    assert answered.json()["version"] == production.version
    settings.MODELWORKS_ROUTE_MAX_STALE_SECONDS = 0
    refused = post(Client(), URL, body, **caller)
    assert refused.status_code == 503, refused.content
    assert refused["Retry-After"].isdigit()
    assert sample("modelworks_predictions_total", model="cancer", version="", outcome="error") == errors + 1


def test_an_api_key_due_for_its_reread_keeps_authenticating_while_the_database_is_away(db, database, monkeypatch):
    raw = make_key("predict:cancer")
    assert process_key_cache().wait_until_subscribed(5)
    monkeypatch.setattr(key_cache, "ENTRY_SECONDS", 0.0)  # every entry is due for its re-read at once
    assert isinstance(api_key_lookup(raw), ApiKey)
    database.away()
    assert api_key_lookup(raw).scopes == ["predict:cancer"]  # the last reading
    assert on_processor_thread(lambda: api_key_lookup(raw)).scopes == ["predict:cancer"]  # re-read in background


@pytest.fixture
def own_cache(settings):
    """The default cache on the test's own Redis, with short timeouts and back-off."""
    with own_redis() as server:
        settings.MODELWORKS_CACHE_BACKOFF_MS = 300
        settings.CACHES = {"default": {"BACKEND": "config.cache.PooledRedisCache", "LOCATION": server.url,
                                       "OPTIONS": {"socket_timeout": 0.2, "socket_connect_timeout": 0.2}}}  # fmt: skip
        yield server


def test_a_hung_redis_costs_one_timeout_then_is_skipped_for_a_back_off(own_cache):
    """Django's cache (throttles, health). The prediction cache has its own client, timeout and back-off: tests/
    serving/test_prediction_cache.py."""
    cache.set("pred:a", [1, None], 60)
    assert cache.get("pred:a") == [1, None]
    skipped = sample("modelworks_cache_skipped_total")
    own_cache.pause()
    try:
        with pytest.raises(redis.TimeoutError):
            cache.get("pred:a")  # waited for the socket timeout
        with pytest.raises(CacheUnavailable):
            cache.get("pred:a")  # not attempted: Redis failed moments ago
        with pytest.raises(CacheUnavailable):
            cache.set("pred:b", [2, None], 60)
        assert sample("modelworks_cache_skipped_total") >= skipped + 2
    finally:
        own_cache.resume()
    time.sleep(0.35)  # past the back-off: the next call probes Redis, which answers
    assert cache.get("pred:a") == [1, None]


def test_the_throttle_counts_per_process_while_redis_is_down(db, own_cache):
    key = api_key_lookup(make_key("predict:cancer", rate_limit_per_second=3))
    own_cache.stop()
    local = sample("modelworks_throttle_local_total")
    for _ in range(5):  # a few tries, in case a one-second window ends in the middle of one
        window = int(time.time())
        answers = [throttle_retry_after(key) for _ in range(4)]
        if int(time.time()) == window:
            break
    assert answers == [None, None, None, 1]  # the key's limit, kept in this process; never an error
    assert sample("modelworks_throttle_local_total") >= local + 4


def test_readiness_holds_on_the_last_good_routes_and_ends_with_them(production, logreg, database, settings):
    """A pod that can still route from memory stays in the Service (degraded); once its routes are too old to
    serve, it cannot answer predictions and leaves it."""
    key = make_key("predict:cancer")
    assert process_key_cache().wait_until_subscribed(5)
    body = {"instances": rows_of(logreg.X_test, 2)}
    assert post(Client(), URL, body, HTTP_AUTHORIZATION=f"Api-Key {key}").status_code == 200

    database.away()
    held = Client().get("/readyz")
    assert held.status_code == 200, held.content
    assert held.json()["status"] == "degraded"
    assert held.json()["checks"]["routes"]["status"] == "degraded", held.json()
    settings.MODELWORKS_ROUTE_MAX_STALE_SECONDS = 0
    gone = Client().get("/readyz")
    assert gone.status_code == 503, gone.content
    assert gone.json()["checks"]["routes"]["status"] == "error"


def test_the_management_api_answers_503_with_retry_after_while_the_database_is_away(staff, database):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(staff)
    assert client.get("/api/v1/models/").status_code == 200
    database.away()
    response = client.get("/api/v1/models/")
    assert response.status_code == 503, response.content[:300]
    assert response["Retry-After"] == "5" and "database" in response.json()["detail"]
