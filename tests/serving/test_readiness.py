"""/readyz takes a pod out of the Service only when it cannot answer predictions, and always answers within the
probe's timeout (platform/k8s: timeoutSeconds 3), even with Redis or Postgres hung."""

from __future__ import annotations

import threading
import time
from concurrent.futures import wait

import psycopg2
import pytest
from django.db import connections
from django.test import Client

from registry import services as registry
from serving import health
from serving.model_cache import model_cache
from tests.platform.instances import own_postgres, own_redis
from tests.platform.processes import free_port
from tests.serving.conftest import make_key, post, rows_of

PROBE_TIMEOUT_S = 3  # platform/k8s/base/web-deployment.yaml, readinessProbe.timeoutSeconds
URL = "/api/v1/models/cancer/predict"


@pytest.fixture(autouse=True)
def no_check_left_running():
    """A check hung by one test must not hand its stale answer to the next one."""
    yield
    wait([future for _, future in health._running.values()], timeout=30)
    health._running.clear()
    health._redis_clients.clear()


def readyz() -> tuple[int, dict, float]:
    started = time.monotonic()
    response = Client().get("/readyz")
    return response.status_code, response.json(), time.monotonic() - started


@pytest.mark.django_db(transaction=True)
def test_everything_up_is_ready_and_ok(production):
    status, body, _ = readyz()
    assert status == 200, body
    assert body["ready"] is True and body["status"] == "ok"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok", "cache": "ok", "models": "ok", "routes": "ok", "onnx": "ok"
    }  # fmt: skip
    assert body["checks"]["models"]["loaded"] == ["cancer v1"]
    assert production.pk in model_cache()  # loaded by the probe, before the first request


@pytest.mark.django_db(transaction=True)
def test_with_the_cache_away_the_pod_stays_ready_degraded_and_predictions_answer(settings, production, logreg):
    caller = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('predict:cancer')}")
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}}
    status, body, _ = readyz()
    assert status == 200, body
    assert body["ready"] is True and body["status"] == "degraded"
    cache = body["checks"]["cache"]
    assert cache["status"] == "error" and "without the prediction cache" in cache["detail"]
    assert post(caller, URL, {"instances": rows_of(logreg.X_test, 2)}).status_code == 200


@pytest.mark.django_db
def test_a_hung_redis_answers_degraded_within_the_probe_timeout(settings):
    with own_redis() as server:
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{server.port}/0"}}
        assert readyz()[1]["checks"]["cache"]["status"] == "ok"
        server.pause()
        status, body, elapsed = readyz()
        assert status == 200 and body["status"] == "degraded", body
        assert body["checks"]["cache"]["status"] in ("error", "timeout")
        assert elapsed < PROBE_TIMEOUT_S / 2
        server.resume()


@pytest.mark.django_db
def test_a_hung_postgres_answers_within_the_probe_timeout_and_never_piles_up_checks():
    with own_postgres() as server:
        settings_dict = connections["default"].settings_dict
        pointed = {**settings_dict, "HOST": "127.0.0.1", "PORT": str(server.port), "NAME": "postgres"}
        original = dict(settings_dict)
        settings_dict.update(pointed)  # the test's own connection is open already and stays on the test database
        try:
            assert readyz()[1]["checks"]["database"]["status"] == "ok"
            server.pause()
            for _ in range(3):
                status, body, elapsed = readyz()
                assert elapsed < PROBE_TIMEOUT_S / 2
                assert body["checks"]["database"]["status"] in ("timeout", "error"), body  # error: connect_timeout
                # Routes come from the database, so with it hung (and no last-good routes) the pod cannot route.
                assert status == 503 and body["ready"] is False and body["status"] == "unready"
            # Probes every 0.8 s, one check thread per dependency at most: a hung check is waited on again, not
            # started anew (the database's ends at libpq's 2 s connect_timeout, the ORM's models check hangs on).
            assert sum(t.name == "readyz-database" for t in threading.enumerate()) <= 1
            assert sum(t.name == "readyz-models" for t in threading.enumerate()) == 1
        finally:
            server.resume()
            settings_dict.clear()
            settings_dict.update(original)


@pytest.mark.django_db(transaction=True)
def test_one_broken_production_model_leaves_the_pod_ready_with_that_model_reported(
    production, artifact_root, regressor_model, ridge
):
    diabetes = registry.model_version_register(model=regressor_model, artifact=ridge.artifact,
                                               evaluation_data=ridge.eval_csv)  # fmt: skip
    registry.alias_create(model=regressor_model, name="production", version=diabetes)
    (artifact_root / production.artifact_path).write_bytes(b"tampered")
    status, body, _ = readyz()
    assert status == 200 and body["ready"] is True and body["status"] == "degraded", body
    models = body["checks"]["models"]
    assert models["status"] == "error" and models["loaded"] == ["diabetes v1"]
    assert "does not match the registered sha256" in models["failed"]["cancer v1"]
    caller = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('predict:diabetes')}")
    diabetes_rows = [{k: float(v) for k, v in r.items()} for r in ridge.X_test.head(2).to_dict(orient="records")]
    assert post(caller, "/api/v1/models/diabetes/predict", {"instances": diabetes_rows}).status_code == 200


@pytest.mark.django_db
def test_the_database_check_connects_the_way_the_app_does():
    """sslmode, certificates and the like in the database OPTIONS apply to the readiness check's connection too:
    here SSL is required of a server that has none, so the check fails exactly as the app's own connections would."""
    options = connections["default"].settings_dict.setdefault("OPTIONS", {})
    saved = dict(options)
    options["sslmode"] = "require"
    try:
        with pytest.raises(psycopg2.OperationalError, match="SSL"):
            health.check_database()
    finally:
        options.clear()
        options.update(saved)
    assert health.check_database() == {"status": "ok"}
