"""The two endpoints the client needs: verified artifact download and point-in-time features over HTTP."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from features.definitions import definitions_apply
from features.models import FeatureValue, FeatureView
from features.retrieval import view_cache
from registry import services as registry
from registry.models import RegistryEvent
from serving.keys import api_key_create
from tests.features.conftest import PATIENT, VITALS

pytestmark = pytest.mark.django_db
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def registered(classifier_model, logreg):
    return registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )


def keyed(*scopes: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(name='ci', scopes=list(scopes))[1]}")


def test_the_artifact_downloads_with_its_sha256_format_and_file_name(api, registered, logreg):
    response = api.get("/api/v1/models/cancer/versions/1/artifact/")
    assert response.status_code == 200
    assert response.content == logreg.artifact
    assert response["X-Artifact-SHA256"] == hashlib.sha256(logreg.artifact).hexdigest() == registered.sha256
    assert response["X-Artifact-Format"] == "skops"
    assert response["Content-Disposition"] == 'attachment; filename="cancer-v1.skops"'
    assert api.get("/api/v1/models/cancer/versions/7/artifact/").status_code == 404


def test_an_api_key_needs_registry_read_to_download(registered):
    denied = keyed("predict:cancer").get("/api/v1/models/cancer/versions/1/artifact/")
    assert denied.status_code == 403 and "scope" in denied.json()["detail"]
    allowed = keyed("registry:read").get("/api/v1/models/cancer/versions/1/artifact/", HTTP_ACCEPT="*/*")
    assert allowed.status_code == 200 and allowed["X-Artifact-SHA256"] == registered.sha256


def test_a_tampered_artifact_answers_409_and_is_marked(api, registered, artifact_root, forest, logreg):
    (artifact_root / registered.artifact_path).write_bytes(forest.artifact)

    response = api.get("/api/v1/models/cancer/versions/1/artifact/", HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 409
    assert "tampered" in response.content.decode() and forest.artifact not in response.content
    registered.refresh_from_db()
    assert registered.integrity_failed_at is not None and not registered.servable
    assert RegistryEvent.objects.filter(version=registered, action="version.integrity_failed").count() == 1
    # Marked for good: putting the right bytes back does not make it downloadable again.
    (artifact_root / registered.artifact_path).write_bytes(logreg.artifact)
    again = api.get("/api/v1/models/cancer/versions/1/artifact/", HTTP_ACCEPT="application/json")
    assert again.status_code == 409 and "integrity check failed at" in again.json()["detail"]


def test_a_missing_artifact_file_answers_409_and_is_marked(api, registered, artifact_root):
    (artifact_root / registered.artifact_path).unlink()
    response = api.get("/api/v1/models/cancer/versions/1/artifact/")
    assert response.status_code == 409 and "missing" in response.json()["detail"]
    registered.refresh_from_db()
    assert registered.integrity_failed_at is not None


@pytest.fixture
def vitals(db) -> FeatureView:
    view_cache.clear()
    definitions_apply(entities=[PATIENT], views=[VITALS])
    view = FeatureView.objects.get(name="vitals")
    FeatureValue.objects.bulk_create(
        FeatureValue(view=view, entity_key=str(entity), event_ts=T0 + timedelta(minutes=m),
                     created_ts=T0 + timedelta(minutes=m), data={"heart_rate": rate, "steps": m})
        for entity, m, rate in [(1, 0, 60.5), (1, 30, 72.25), (2, 10, 80.0)]
    )  # fmt: skip
    yield view
    view_cache.clear()


def test_historical_features_answer_point_in_time_values_in_row_order(api, vitals):
    rows = [
        {"patient_id": 1, "event_timestamp": (T0 + timedelta(minutes=20)).isoformat()},
        {"patient_id": 1, "event_timestamp": (T0 + timedelta(minutes=45)).isoformat()},
        {"patient_id": 2, "event_timestamp": (T0 + timedelta(minutes=5)).isoformat()},  # before its first value
        {"patient_id": 3, "event_timestamp": (T0 + timedelta(minutes=5)).isoformat()},  # no values at all
    ]
    response = api.post("/api/v1/features/historical/", {"entity_rows": rows,
                        "features": ["vitals:heart_rate", "vitals:steps"]}, format="json")  # fmt: skip
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["columns"] == ["patient_id", "event_timestamp", "vitals:heart_rate", "vitals:steps"]
    assert [row[2:] for row in body["rows"]] == [[60.5, 0], [72.25, 30], [None, None], [None, None]]
    assert [row[0] for row in body["rows"]] == [1, 1, 2, 3]


def test_historical_features_refuse_bad_input_with_field_detail(api, vitals, settings):
    row = {"patient_id": 1, "event_timestamp": T0.isoformat()}
    unknown = api.post("/api/v1/features/historical/", {"entity_rows": [row], "features": ["vitals:nope"]},
                       format="json")  # fmt: skip
    assert unknown.status_code == 400
    assert unknown.json() == {"features": ["vitals:nope: view 'vitals' has no feature 'nope'"]}
    no_time = api.post("/api/v1/features/historical/", {"entity_rows": [{"patient_id": 1}],
                       "features": ["vitals:steps"]}, format="json")  # fmt: skip
    assert no_time.status_code == 400 and "event_timestamp" in no_time.json()["entity_df"][0]
    settings.MODELWORKS_FEATURES_MAX_ROWS = 2
    too_many = api.post("/api/v1/features/historical/", {"entity_rows": [row] * 3, "features": ["vitals:steps"]},
                        format="json")  # fmt: skip
    assert too_many.status_code == 400 and too_many.json() == {"entity_rows": ["3 rows; at most 2 per request"]}


def test_historical_features_need_registry_read_for_an_api_key(vitals):
    row = '{"patient_id": 1, "event_timestamp": "2024-01-01T00:00:00Z"}'
    body = f'{{"entity_rows": [{row}], "features": ["vitals:steps"]}}'
    denied = keyed("predict:*").post("/api/v1/features/historical/", body, content_type="application/json")
    assert denied.status_code == 403
    allowed = keyed("registry:read").post("/api/v1/features/historical/", body, content_type="application/json")
    assert allowed.status_code == 200 and allowed.json()["rows"] == [[1, "2024-01-01T00:00:00Z", 0]]
