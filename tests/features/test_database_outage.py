"""Predictions by entity id while Postgres is away or hung, through the ASGI front (its single request-processor
thread answers every prediction of a web worker): feature values the database cannot give are missing (the documented
400 naming them), view definitions never read answer 503 with Retry-After, never a 500, and the processor is held a
bounded time at most, so the other models' predictions go on. Entity ids Postgres cannot store answer 400.

The database goes away as in tests/serving/test_degraded.py (a port nothing listens on) and hangs as in
tests/serving/test_credentials_degraded.py (a port that accepts and never answers: Postgres under SIGSTOP)."""

from __future__ import annotations

import json
import time

import pytest
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from features import retrieval
from features.definitions import definitions_apply
from features.models import FeatureView
from features.services import feature_values_push
from registry import services as registry
from serving.front import request_processor
from serving.key_cache import key_cache as process_key_cache
from serving.keys import api_key_lookup
from tests.features import test_serving
from tests.features.conftest import ago
from tests.serving import conftest as serving_fixtures
from tests.serving import test_credentials_degraded, test_front
from tests.serving.conftest import make_key, rows_of
from tests.serving.test_front import call

pytestmark = pytest.mark.django_db(transaction=True)
# Fixtures of other modules, used here by name.
by_patient, fresh_serving_state = test_serving.by_patient, test_serving.fresh_serving_state
database, hung_database = serving_fixtures.database, test_credentials_degraded.hung_database
processor_lets_go_of_the_database = test_front.processor_lets_go_of_the_database
ID_CHARACTERS = st.one_of(st.sampled_from("ab\x00\ud800\udfff"), st.characters(exclude_categories=[]))


@pytest.fixture(autouse=True)
def value_reads_let_go_of_the_database():
    yield
    retrieval._value_reads.close_connections()  # it keeps one between reads; the test database is dropped at the end


@pytest.fixture
def diabetes(regressor_model, ridge):
    """A second model, with plain inputs: it needs no feature read."""
    version = registry.model_version_register(
        model=regressor_model, artifact=ridge.artifact, evaluation_data=ridge.eval_csv
    )
    registry.alias_create(model=regressor_model, name="production", version=version)
    return ridge


@pytest.fixture
def key() -> str:
    raw = make_key("predict:cancer", "predict:diabetes")
    assert process_key_cache().wait_until_subscribed(5)
    assert api_key_lookup(raw) is not None  # in memory, so the key serves without the database
    return raw


def predict(key: str, model: str, instances: list[dict]) -> tuple[int, dict, dict]:
    status, headers, content = call(
        "POST", f"/api/v1/models/{model}/predict", json.dumps({"instances": instances}).encode(),
        {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"},
    )  # fmt: skip
    return status, json.loads(content), headers


@pytest.fixture
def rereads(monkeypatch, settings):
    """Every request asks the database for routes and view definitions again, as it does once their TTL is out."""
    settings.MODELWORKS_ROUTE_TTL_MS = 0
    monkeypatch.setattr(retrieval, "VIEW_CACHE_SECONDS", 0.0)
    monkeypatch.setattr(retrieval, "VIEW_RETRY_SECONDS", 0.0)


def break_connections() -> None:
    """As a real outage breaks them: the connections the processor and the feature reads keep are closed."""
    request_processor().close_connections()
    retrieval._value_reads.close_connections()


def assert_missing_features(answer: tuple[int, dict, dict], inputs: set[str]) -> None:
    status, body, _ = answer
    assert status == 400, body
    assert body["errors"], body
    for error in body["errors"]:
        assert error["row"] == 0 and error["field"] in inputs
        assert "has no value (patient_id=0)" in error["message"]


def test_with_the_database_away_a_prediction_by_entity_answers_400_naming_the_missing_features(
    store, by_patient, diabetes, key, database, rereads
):
    inputs = {str(c) for c in by_patient.columns}
    store.drop(FeatureView.objects.get(name="tumour"))  # values only offline: each lookup reads Postgres
    assert predict(key, "cancer", [{"patient_id": 0}])[0] == 200
    assert predict(key, "diabetes", rows_of(diabetes.X_test, 1))[0] == 200

    database.away()
    break_connections()
    assert_missing_features(predict(key, "cancer", [{"patient_id": 0}]), inputs)
    assert predict(key, "diabetes", rows_of(diabetes.X_test, 1))[0] == 200
    # The values a request gives need no lookup: a full row answers as before.
    full = {**rows_of(by_patient, 1)[0], "patient_id": 0}
    assert predict(key, "cancer", [full])[0] == 200

    # Definitions never read: nothing to look values up with. The request is fine, the database is not: 503.
    retrieval.view_cache.clear()
    status, body, headers = predict(key, "cancer", [{"patient_id": 0}])
    assert status == 503, body
    assert headers["retry-after"] == "1"
    assert "feature views are not in memory: tumour" in body["detail"]

    database.back()
    assert predict(key, "cancer", [{"patient_id": 0}])[0] == 200


def test_a_hung_database_holds_predictions_by_entity_a_bounded_time_and_the_other_models_not_at_all(
    store, by_patient, diabetes, key, hung_database, rereads
):
    inputs = {str(c) for c in by_patient.columns}
    store.drop(FeatureView.objects.get(name="tumour"))  # values only offline: each lookup reads Postgres
    assert predict(key, "cancer", [{"patient_id": 0}])[0] == 200
    assert predict(key, "diabetes", rows_of(diabetes.X_test, 1))[0] == 200

    hung_database.hang(connect_timeout=20)
    break_connections()  # the next connects meet the hang
    started = time.monotonic()
    assert_missing_features(predict(key, "cancer", [{"patient_id": 0}]), inputs)
    assert predict(key, "diabetes", rows_of(diabetes.X_test, 1))[0] == 200
    assert_missing_features(predict(key, "cancer", [{"patient_id": 0}]), inputs)  # not queued behind the hung read
    assert predict(key, "diabetes", rows_of(diabetes.X_test, 1))[0] == 200
    waited = time.monotonic() - started
    # Not a performance bound: waiting on the hang itself would take the 20 s connect_timeout (then a 500).
    assert waited < 10, waited


@pytest.fixture
def by_customer(classifier_model, logreg):
    """`cancer` v1 with its inputs mapped to a view of an entity with string ids."""
    X = logreg.X_test
    names = [str(c).replace(" ", "_") for c in X.columns]
    definitions_apply(
        entities=[{"name": "customer", "join_key": "user_id", "value_type": "string"}],
        views=[{"name": "cells", "entity": "customer", "ttl": "1d",
                "features": [{"name": n, "dtype": "float"} for n in names]}],
    )  # fmt: skip
    view = FeatureView.objects.select_related("entity").get(name="cells")
    row = {n: float(v) for n, v in zip(names, X.iloc[0], strict=True)}
    feature_values_push(view=view, rows=[{"user_id": "ab", "event_timestamp": ago(minutes=5), **row}])
    from registry.signature import infer_signature

    signature, _ = infer_signature(logreg.estimator, "classification", X)
    for entry, name in zip(signature["inputs"], names, strict=True):
        entry["feature"] = f"cells:{name}"
    version = registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, signature=signature, evaluation_data=logreg.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=version)
    return view


@pytest.mark.parametrize("user_id", ["a\u0000b", "a\ud800b", "\udfff"])
def test_an_entity_id_postgres_cannot_store_answers_400_naming_the_field(by_customer, user_id):
    key = make_key("predict:cancer")
    assert predict(key, "cancer", [{"user_id": "ab"}])[0] == 200
    status, body, _ = predict(key, "cancer", [{"user_id": user_id}])
    assert status == 400, body
    assert any("user_id" in error["message"] for error in body["errors"]), body


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user_id=st.text(st.one_of(st.sampled_from("ab\x00\ud800\udfff"), st.characters(exclude_categories=[])), max_size=30)
)
def test_any_string_entity_id_is_looked_up_or_refused_by_name(by_customer, user_id):
    try:
        answer = retrieval.get_online_features([{"user_id": user_id}], ["cells:mean_radius"])
    except ValidationError as exc:
        assert all("user_id" in message for message in exc.messages)
        return
    expected = ["online"] if user_id == "ab" else ["missing"]
    assert answer.features["cells:mean_radius"].sources == expected
