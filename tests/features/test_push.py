"""The push API: all-or-nothing validation, offline storage, online only when newer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from features.models import FeatureValue
from tests.features.conftest import ago

pytestmark = pytest.mark.django_db
URL = "/api/v1/features/vitals/push"


def test_pushed_rows_are_stored_offline_and_the_newest_goes_online(api, vitals, store):
    rows = [
        {"patient_id": 1, "event_timestamp": ago(minutes=10), "heart_rate": 70, "steps": 100, "ward": "A"},
        {"patient_id": 1, "event_timestamp": ago(minutes=5), "heart_rate": 72.5, "smoker": False},
        {"patient_id": "2", "event_timestamp": ago(minutes=1), "heart_rate": 90.0, "steps": 3.0},
    ]
    response = api.post(URL, {"rows": rows}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json() == {"stored": 3, "online": 2}
    assert FeatureValue.objects.filter(view=vitals).count() == 3
    (one, two), = store.read([(vitals, ["1", "2"])])  # fmt: skip
    assert one.data == {"heart_rate": 72.5, "steps": None, "smoker": False, "ward": None}
    assert two.data["steps"] == 3 and isinstance(two.data["steps"], int)
    vitals.refresh_from_db()
    assert vitals.newest_event_at > timezone.now() - timedelta(minutes=2)


def test_an_older_push_is_kept_offline_but_never_replaces_a_newer_online_value(api, vitals, store):
    api.post(URL, {"rows": [{"patient_id": 1, "event_timestamp": ago(minutes=1), "heart_rate": 80}]}, format="json")
    late = api.post(URL, {"rows": [{"patient_id": 1, "event_timestamp": ago(minutes=30), "heart_rate": 60}]},
                    format="json")  # fmt: skip
    assert late.json() == {"stored": 1, "online": 0}
    assert store.read([(vitals, ["1"])])[0][0].data["heart_rate"] == 80
    assert FeatureValue.objects.filter(view=vitals).count() == 2


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"event_timestamp": "2024-01-01T00:00:00Z", "heart_rate": 1.0}, "patient_id", "is missing"),
        ({"patient_id": "abc", "event_timestamp": "2024-01-01T00:00:00Z"}, "patient_id", "must be an integer id"),
        ({"patient_id": 1, "heart_rate": 1.0}, "event_timestamp", "is missing or not"),
        ({"patient_id": 1, "event_timestamp": "yesterday"}, "event_timestamp", "is missing or not"),
        ({"patient_id": 1, "event_timestamp": "2999-01-01T00:00:00Z"}, "event_timestamp", "is in the future"),
        ({"patient_id": 1, "event_timestamp": "2024-01-01T00:00:00Z", "bmi": 22.0}, "bmi", "not a feature"),
        ({"patient_id": 1, "event_timestamp": "2024-01-01T00:00:00Z", "heart_rate": "fast"}, "heart_rate", "number"),
        ({"patient_id": 1, "event_timestamp": "2024-01-01T00:00:00Z", "steps": 1.5}, "steps", "integer"),
        ({"patient_id": 1, "event_timestamp": "2024-01-01T00:00:00Z", "smoker": "no"}, "smoker", "true or false"),
        ({"patient_id": 1, "event_timestamp": "2024-01-01T00:00:00Z", "ward": 3}, "ward", "string"),
    ],
)
def test_one_bad_row_rejects_the_whole_request_naming_row_and_field(api, vitals, store, row, field, message):
    good = {"patient_id": 7, "event_timestamp": ago(minutes=1), "heart_rate": 70.0}
    response = api.post(URL, {"rows": [good, row]}, format="json")
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert (error["row"], error["field"]) == (1, field)
    assert message in error["message"]
    assert not FeatureValue.objects.exists()
    assert store.read([(vitals, ["7"])]) == [[None]]


def test_a_timestamp_slightly_ahead_is_tolerated(api, vitals, settings):
    settings.MODELWORKS_FEATURES_FUTURE_TOLERANCE_S = 300
    ahead = (timezone.now() + timedelta(seconds=60)).isoformat()
    assert api.post(URL, {"rows": [{"patient_id": 1, "event_timestamp": ahead}]}, format="json").status_code == 200


def test_push_needs_authentication_and_a_known_view(vitals):
    rows = {"rows": [{"patient_id": 1, "event_timestamp": ago(minutes=1)}]}
    assert APIClient().post(URL, rows, format="json").status_code in (401, 403)
    assert not FeatureValue.objects.exists()


def test_unknown_view_is_404_and_an_empty_push_400(api, vitals):
    assert api.post("/api/v1/features/nope/push", {"rows": []}, format="json").status_code == 404
    response = api.post(URL, {"rows": []}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "rows"
