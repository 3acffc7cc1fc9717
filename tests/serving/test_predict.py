"""The prediction API as a client uses it: answers equal the model's own, pins and aliases, caching, errors."""

from __future__ import annotations

import numpy as np
import pytest

from registry import services as registry
from serving import prediction_log
from serving.models import PredictionLog, ServingPolicy
from tests.serving.conftest import post, rows_of

pytestmark = pytest.mark.django_db
URL = "/api/v1/models/cancer/predict"


def test_predictions_equal_the_models_own(caller, production, logreg):
    rows = rows_of(logreg.X_test, 25)
    response = post(caller, URL, {"instances": rows})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == "cancer" and body["version"] == 1 and body["route"] == "alias:production"
    assert body["predictions"] == logreg.estimator.predict(logreg.X_test.head(25)).tolist()
    expected = logreg.estimator.predict_proba(logreg.X_test.head(25))
    assert np.allclose(body["probabilities"], expected, rtol=0, atol=1e-12)
    assert body["classes"] == [0, 1]
    assert body["cached"] == [False] * 25
    assert response["X-Request-ID"] == body["request_id"]


def test_inputs_as_arrays_in_signature_order(caller, production, logreg):
    arrays = logreg.X_test.head(3).to_numpy().tolist()
    body = post(caller, URL, {"inputs": arrays}).json()
    assert body["predictions"] == logreg.estimator.predict(logreg.X_test.head(3)).tolist()


def test_pins_and_aliases_choose_the_version(caller, production, classifier_model, forest):
    v2 = registry.model_version_register(
        model=classifier_model, artifact=forest.artifact, metrics={"accuracy": 0.97, "f1": 0.99}
    )
    registry.alias_create(model=classifier_model, name="challenger", version=v2)
    row = rows_of(forest.X_test, 1)
    assert post(caller, URL + "?version=2", {"instances": row}).json()["route"] == "pinned"
    assert post(caller, URL + "?version=2", {"instances": row}).json()["version"] == 2
    assert post(caller, URL + "?alias=challenger", {"instances": row}).json()["version"] == 2
    assert post(caller, URL, {"instances": row}).json()["version"] == 1


def test_unknown_model_version_or_alias_is_404(caller, production, logreg):
    row = rows_of(logreg.X_test, 1)
    assert post(caller, URL + "?version=9", {"instances": row}).status_code == 404
    assert post(caller, URL + "?alias=nope", {"instances": row}).status_code == 404
    missing = post(caller, "/api/v1/models/nothing/predict", {"instances": row})
    assert missing.status_code in (403, 404)  # the key's scope is predict:cancer


def test_a_rejected_version_is_never_served_even_when_pinned(caller, production, classifier_model, logreg):
    registry.model_version_register(model=classifier_model, artifact=logreg.artifact, metrics={"accuracy": 0.1})
    response = post(caller, URL + "?version=2", {"instances": rows_of(logreg.X_test, 1)})
    assert response.status_code == 409 and "rejected" in response.json()["detail"]


def test_repeated_rows_come_from_the_cache_with_the_same_answer(caller, production, logreg):
    rows = rows_of(logreg.X_test, 4)
    first = post(caller, URL, {"instances": rows[:2]}).json()
    second = post(caller, URL, {"instances": rows}).json()
    assert second["cached"] == [True, True, False, False]
    assert second["predictions"][:2] == first["predictions"]
    assert second["probabilities"][:2] == first["probabilities"]
    assert second["predictions"] == logreg.estimator.predict(logreg.X_test.head(4)).tolist()


def test_non_deterministic_models_are_never_cached(caller, production, classifier_model, logreg):
    ServingPolicy.objects.create(model=classifier_model, deterministic=False)
    rows = rows_of(logreg.X_test, 2)
    post(caller, URL, {"instances": rows})
    assert post(caller, URL, {"instances": rows}).json()["cached"] == [False, False]


def test_each_prediction_is_logged_with_pii_hashed(caller, production, classifier_model, logreg, forest):
    signature = production.signature
    signature["inputs"][0]["pii"] = True
    v2 = registry.model_version_register(
        model=classifier_model, artifact=forest.artifact, signature=signature, metrics={"accuracy": 1, "f1": 1}
    )
    row = rows_of(logreg.X_test, 1)
    body = post(caller, URL + "?version=2", {"instances": row, "key": "user-42"}, HTTP_X_REQUEST_ID="req-1").json()
    assert body["request_id"] == "req-1"
    prediction_log.prediction_log().flush()
    entry = PredictionLog.objects.get(request_id="req-1")
    assert (entry.model_name, entry.version, entry.routing_key) == ("cancer", 2, "user-42")
    assert entry.route_reason == "pinned"
    assert entry.inputs[0]["mean radius"].startswith("hmac:")
    assert entry.inputs[0]["mean texture"] == row[0]["mean texture"]
    assert entry.outputs["predictions"] == body["predictions"]
    assert v2.version == 2
