"""Serving by entity id: a model whose signature maps inputs to features is sent patient ids (and overrides)."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.management import call_command
from django.test import Client

from features.definitions import definitions_apply
from features.on_demand import on_demand_feature, unregister
from features.services import feature_values_push
from registry import services as registry
from registry.signature import infer_signature, validate_signature
from serving import model_cache as model_cache_module
from serving import prediction_log as prediction_log_module
from serving import routing
from serving.keys import api_key_create
from tests.features.conftest import ago

pytestmark = pytest.mark.django_db
URL = "/api/v1/models/cancer/predict"


def column(name: str) -> str:
    return name.replace(" ", "_")


@pytest.fixture(autouse=True)
def fresh_serving_state(monkeypatch):
    """Empty route and model caches, and a prediction-log buffer that only flushes inside the test's transaction."""
    routing.clear_cache()
    monkeypatch.setattr(model_cache_module.model_cache, "_value", None)
    buffer = prediction_log_module.PredictionLogBuffer(flush_seconds=3600, max_rows=100_000, batch_rows=100_000)
    monkeypatch.setattr(prediction_log_module.prediction_log, "_value", buffer)
    yield
    routing.clear_cache()


@pytest.fixture
def by_patient(classifier_model, logreg):
    """`cancer` v1 with every input mapped to the `tumour` view, and the test split stored as patients 0..n."""
    X = logreg.X_test
    definitions_apply(
        entities=[{"name": "patient", "join_key": "patient_id", "value_type": "int"}],
        views=[{"name": "tumour", "entity": "patient", "ttl": "1d",
                "features": [{"name": column(c), "dtype": "float"} for c in X.columns]}],
    )  # fmt: skip
    from features.models import FeatureView

    view = FeatureView.objects.select_related("entity").get(name="tumour")
    rows = [{"patient_id": i, "event_timestamp": ago(minutes=5), **{column(k): float(v) for k, v in r.items()}}
            for i, r in enumerate(X.head(5).to_dict("records"))]  # fmt: skip
    feature_values_push(view=view, rows=rows)
    signature, _ = infer_signature(logreg.estimator, "classification", X)
    for entry in signature["inputs"]:
        entry["feature"] = f"tumour:{column(entry['name'])}"
    version = registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, signature=signature, evaluation_data=logreg.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=version)
    return X


@pytest.fixture
def caller(db) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(name='t', scopes=['predict:cancer'])[1]}")


def test_a_signature_may_reference_features_but_only_well_formed_ones():
    base = {"inputs": [{"name": "age", "dtype": "float", "feature": "patient:age"}]}
    assert validate_signature(base)[0]["inputs"][0]["feature"] == "patient:age"
    assert validate_signature({"inputs": [{"name": "age", "feature": "age"}]})[1] == [
        "inputs[0].feature: must be a reference like 'view:feature'"
    ]


def test_entity_ids_are_enough_and_answer_the_same_as_the_features(caller, by_patient, logreg):
    response = caller.post(URL, {"instances": [{"patient_id": 0}, {"patient_id": 3}]}, content_type="application/json")
    assert response.status_code == 200, response.json()
    body = response.json()
    expected = logreg.estimator.predict_proba(by_patient.iloc[[0, 3]])
    assert np.allclose(body["probabilities"], expected)
    names = list(by_patient.columns)
    assert body["features"] == [{"looked_up": names, "computed": [], "missing": []}] * 2


def test_override_values_win_and_are_not_looked_up(caller, by_patient, logreg):
    row = by_patient.iloc[1].to_dict()
    response = caller.post(URL, {"instances": [{"patient_id": 0, "mean radius": row["mean radius"]}]},
                           content_type="application/json")  # fmt: skip
    body = response.json()
    mixed = by_patient.iloc[[0]].copy()
    mixed["mean radius"] = row["mean radius"]
    assert np.allclose(body["probabilities"], logreg.estimator.predict_proba(mixed))
    assert "mean radius" not in body["features"][0]["looked_up"] and len(body["features"][0]["looked_up"]) == 29


def test_computed_features_are_reported(caller, by_patient, logreg):
    @on_demand_feature("tumour:mean_area", inputs=["tumour:mean_radius"])
    def area(values):
        return 3.141592653589793 * values["tumour:mean_radius"] ** 2

    try:
        row = by_patient.iloc[0].to_dict()
        # patient 99 is unknown: everything is given except mean area, which is computed from mean radius
        given = {k: v for k, v in row.items() if k != "mean area"}
        body = caller.post(URL, {"instances": [{"patient_id": 99, **given}]}, content_type="application/json").json()
        assert body["features"] == [{"looked_up": [], "computed": ["mean area"], "missing": []}]
    finally:
        unregister("tumour:mean_area")


def test_missing_required_features_are_a_400_naming_them(caller, by_patient):
    response = caller.post(URL, {"instances": [{"patient_id": 0}, {"patient_id": 12345}]},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert {e["row"] for e in errors} == {1}
    assert errors[0]["field"] == "mean radius"
    assert errors[0]["message"] == "feature tumour:mean_radius has no value (patient_id=12345)"


def test_plain_feature_requests_still_work_and_say_nothing_about_features(caller, by_patient):
    row = {k: float(v) for k, v in by_patient.iloc[0].items()}
    body = caller.post(URL, {"instances": [row]}, content_type="application/json").json()
    assert body["features"] == [{"looked_up": [], "computed": [], "missing": []}]
    arrays = caller.post(URL, {"inputs": [list(row.values())]}, content_type="application/json").json()
    assert "features" not in arrays and arrays["predictions"] == body["predictions"]


def test_the_demo_serves_by_patient_id_and_seeds_once(capsys):
    call_command("seed_demo")
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "features: create view tumour_measurements" in out and out.count("569 patients stored") == 1
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(name='d', scopes=['predict:*'])[1]}")
    body = client.post("/api/v1/models/breast-cancer-by-patient/predict", {"instances": [{"patient_id": 7}]},
                       content_type="application/json").json()  # fmt: skip
    assert body["predictions"] in ([0], [1]) and len(body["features"][0]["looked_up"]) == 30
    from features.retrieval import get_online_features

    ratio = get_online_features([{"patient_id": 7}], ["tumour_measurements:radius_ratio"]).features[
        "tumour_measurements:radius_ratio"
    ]
    assert ratio.sources == ["on_demand"] and 0 < ratio.values[0] < 1
