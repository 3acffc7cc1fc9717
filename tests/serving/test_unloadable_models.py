"""A version whose artifact cannot be loaded: the same clear answer from the first request on, through the Django
view and the ASGI front; counted; not fetched again by every request or probe; picked up again once fixed."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from registry import services as registry
from serving import routing
from tests.serving.conftest import make_key, post, rows_of
from tests.serving.test_front import call, predict_body, processor_lets_go_of_the_database  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/models/cancer/predict"


def break_artifact(version, artifact_root, how: str) -> None:
    path = artifact_root / version.artifact_path
    if how == "tampered":
        path.write_bytes(b"tampered")
    else:
        path.unlink()


def metric(name: str, **labels: str) -> float:
    """A sample as /metrics shows it (0 when absent)."""
    for family in text_string_to_metric_families(Client().get("/metrics").content.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def via_django(caller, key, query, rows):
    response = post(caller, URL + query, {"instances": rows})
    return response.status_code, response.json()["detail"], response.headers.get("Retry-After")


def via_front(caller, key, query, rows):
    status, headers, content = call("POST", URL, predict_body(rows), {"Authorization": f"Api-Key {key}"}, query[1:])
    return status, json.loads(content)["detail"], headers.get("retry-after")


FRONTS = {"django": via_django, "front": via_front}


@pytest.mark.parametrize("how", ["tampered", "missing"])
@pytest.mark.parametrize("front", FRONTS)
def test_a_routed_production_version_that_cannot_load_answers_503_from_the_first_request(
    how, front, production, artifact_root, caller, key, logreg
):
    break_artifact(production, artifact_root, how)
    failures = metric("modelworks_model_load_failures_total", model="cancer", version="1")
    answers = [FRONTS[front](caller, key, "", rows_of(logreg.X_test, 1)) for _ in range(3)]
    for status, detail, retry_after in answers:
        assert status == 503, detail
        assert detail.startswith("cancer v1 ") and "cannot be" in detail
        assert retry_after is not None and int(retry_after) >= 1
    # One load attempt for three requests: the failure is remembered, not fetched and parsed again each time.
    assert metric("modelworks_model_load_failures_total", model="cancer", version="1") == failures + 1
    assert metric("modelworks_model_load_failed", model="cancer", version="1") == 1


@pytest.mark.parametrize("how", ["tampered", "missing"])
@pytest.mark.parametrize("front", FRONTS)
def test_an_explicitly_pinned_version_that_cannot_load_answers_409_from_the_first_request(
    how, front, production, artifact_root, caller, key, logreg
):
    break_artifact(production, artifact_root, how)
    for _ in range(2):
        status, detail, _ = FRONTS[front](caller, key, "?version=1", rows_of(logreg.X_test, 1))
        assert status == 409 and detail.startswith("cancer v1 ") and "cannot be" in detail


def test_the_other_models_are_served_and_probes_do_not_reload_the_broken_one(
    production, artifact_root, caller, logreg, regressor_model, ridge
):
    diabetes = registry.model_version_register(model=regressor_model, artifact=ridge.artifact,
                                               evaluation_data=ridge.eval_csv)  # fmt: skip
    registry.alias_create(model=regressor_model, name="production", version=diabetes)
    break_artifact(production, artifact_root, "missing")
    failures = metric("modelworks_model_load_failures_total", model="cancer", version="1")
    for _ in range(4):
        assert Client().get("/readyz").status_code == 200
    assert post(caller, URL, {"instances": rows_of(logreg.X_test, 1)}).status_code == 503
    assert metric("modelworks_model_load_failures_total", model="cancer", version="1") == failures + 1
    other = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('predict:diabetes')}")
    rows = [{k: float(v) for k, v in r.items()} for r in ridge.X_test.head(2).to_dict(orient="records")]
    assert post(other, "/api/v1/models/diabetes/predict", {"instances": rows}).status_code == 200


def test_a_fixed_artifact_is_picked_up_after_the_back_off(settings, production, artifact_root, caller, logreg):
    settings.MODELWORKS_MODEL_RETRY_S = 0.5
    good = (artifact_root / production.artifact_path).read_bytes()
    break_artifact(production, artifact_root, "missing")
    rows = rows_of(logreg.X_test, 1)
    assert post(caller, URL, {"instances": rows}).status_code == 503
    (artifact_root / production.artifact_path).write_bytes(good)
    assert post(caller, URL, {"instances": rows}).status_code == 503  # still backing off: not tried again yet
    time.sleep(0.6)
    assert post(caller, URL, {"instances": rows}).status_code == 200
    assert metric("modelworks_model_load_failed", model="cancer", version="1") == 0


def test_a_new_production_version_is_served_at_once(production, artifact_root, caller, classifier_model, logreg):
    break_artifact(production, artifact_root, "tampered")
    rows = rows_of(logreg.X_test, 1)
    assert post(caller, URL, {"instances": rows}).status_code == 503
    fixed = registry.model_version_register(model=classifier_model, artifact=logreg.artifact,
                                            evaluation_data=logreg.eval_csv)  # fmt: skip
    registry.alias_move(model=classifier_model, name="production", version=fixed)
    routing.clear_cache()  # the route cache's 500 ms, not the load back-off, is all that delays the new version
    answer = post(caller, URL, {"instances": rows})
    assert answer.status_code == 200 and answer.json()["version"] == 2
