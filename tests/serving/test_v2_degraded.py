"""V2 inference answers as the native endpoint does when nothing can be served: the database away with no route in
memory is a 503 with Retry-After, counted in modelworks_predictions_total; a production version that cannot load is
a 503 (the server routed it), a 409 only for a version the URL names. Through the Django view and the ASGI front."""

from __future__ import annotations

import json

import pytest

from serving.key_cache import key_cache as process_key_cache
from tests.serving.conftest import post
from tests.serving.test_degraded import sample
from tests.serving.test_front import call, processor_lets_go_of_the_database  # noqa: F401 - the fixture
from tests.serving.test_unloadable_models import break_artifact

pytestmark = pytest.mark.django_db(transaction=True)
INFER = "/v2/models/cancer/infer"


def v2_body(logreg) -> dict:
    return {"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP64", "data": list(logreg.X_test.iloc[0])}]}


def via_django(caller, key, path, body):
    response = post(caller, path, body)
    return response.status_code, response.json(), response.headers.get("Retry-After")


def via_front(caller, key, path, body):
    status, headers, content = call("POST", path, json.dumps(body).encode(), {"Authorization": f"Api-Key {key}"})
    return status, json.loads(content), headers.get("retry-after")


FRONTS = {"django": via_django, "front": via_front}


@pytest.mark.parametrize("front", FRONTS)
def test_v2_with_the_database_away_and_no_route_to_serve_answers_503_with_retry_after_and_is_counted(
    front, production, logreg, caller, key, database, settings
):
    settings.MODELWORKS_ROUTE_TTL_MS = 0
    assert process_key_cache().wait_until_subscribed(5)  # the key is then remembered through the outage
    assert FRONTS[front](caller, key, INFER, v2_body(logreg))[0] == 200
    errors = sample("modelworks_predictions_total", model="cancer", version="", outcome="error")
    database.away()
    served = FRONTS[front](caller, key, INFER, v2_body(logreg))
    assert served[0] == 200, served  # the last good routes
    settings.MODELWORKS_ROUTE_MAX_STALE_SECONDS = 0  # now too old to serve
    status, payload, retry_after = FRONTS[front](caller, key, INFER, v2_body(logreg))
    assert status == 503, payload
    assert "routes older than 0 s" in payload["error"]
    assert retry_after is not None and int(retry_after) >= 1
    assert sample("modelworks_predictions_total", model="cancer", version="", outcome="error") == errors + 1


@pytest.mark.parametrize("front", FRONTS)
def test_v2_for_a_production_version_that_cannot_load_answers_503_and_409_only_when_pinned(
    front, production, artifact_root, logreg, caller, key
):
    break_artifact(production, artifact_root, "missing")
    for _ in range(2):
        status, payload, retry_after = FRONTS[front](caller, key, INFER, v2_body(logreg))
        assert status == 503, payload
        assert payload["error"].startswith("cancer v1 ") and "cannot be" in payload["error"]
        assert retry_after is not None and int(retry_after) >= 1
    status, payload, _ = FRONTS[front](caller, key, "/v2/models/cancer/versions/1/infer", v2_body(logreg))
    assert status == 409, payload


def test_v2_metadata_with_nothing_to_route_answers_503_with_retry_after(production, caller, key, database):
    assert process_key_cache().wait_until_subscribed(5)
    assert caller.get("/v2/models/cancer").status_code == 200  # the key is remembered; this route is not asked again
    database.away()
    answer = caller.get("/v2/models/cancer/versions/1")  # a route never read: nothing to serve it from
    assert answer.status_code == 503, answer.content
    assert answer["Retry-After"].isdigit()
