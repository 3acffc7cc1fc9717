"""Online reads: TTL, the fallback order (request, online, on-demand, offline, missing), sources, ages, one round
trip, metrics, and the HTTP endpoint."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from features import on_demand
from features.definitions import definitions_apply
from features.models import FeatureValue, FeatureView
from features.online import OnlineRecord, RedisOnlineStore
from features.retrieval import get_online_features, view_cache
from features.schema import to_us
from features.services import feature_rows_check, feature_values_push, feature_values_store, feature_view_materialize
from tests.features.conftest import VITALS, ago

pytestmark = pytest.mark.django_db
REFS = ["vitals:heart_rate", "vitals:steps"]


def counted(view: str, source: str) -> float:
    return REGISTRY.get_sample_value("modelworks_feature_values_total", {"view": view, "source": source}) or 0.0


def offline_only(view, rows):
    """Values stored offline but never materialized (a batch ingest, or an online write that failed)."""
    feature_values_store(view=view, rows=feature_rows_check(view=view, rows=rows))


def test_fresh_online_values_come_with_their_age(vitals, store):
    feature_values_push(view=vitals, rows=[{"patient_id": 1, "event_timestamp": ago(minutes=10), "heart_rate": 70.0,
                                            "steps": 12}])  # fmt: skip
    answer = get_online_features([{"patient_id": 1}, {"patient_id": 2}], REFS)
    heart = answer.features["vitals:heart_rate"]
    assert heart.values == [70.0, None] and heart.sources == ["online", "missing"]
    assert 599 < heart.age_seconds[0] < 620 and heart.age_seconds[1] is None
    assert answer.row(0) == {"vitals:heart_rate": 70.0, "vitals:steps": 12}


def test_a_value_older_than_the_ttl_is_missing(vitals, store):
    feature_values_push(view=vitals, rows=[{"patient_id": 1, "event_timestamp": ago(minutes=61), "heart_rate": 70.0}])
    assert store.read([(vitals, ["1"])])[0][0] is not None  # still online, but too old to serve
    answer = get_online_features([{"patient_id": 1}], ["vitals:heart_rate"])
    assert answer.features["vitals:heart_rate"].sources == ["missing"]


def test_just_inside_the_ttl_is_served(vitals, store):
    feature_values_push(view=vitals, rows=[{"patient_id": 1, "event_timestamp": ago(minutes=59), "heart_rate": 1.0}])
    assert get_online_features([{"patient_id": 1}], ["vitals:heart_rate"]).features["vitals:heart_rate"].sources == [
        "online"
    ]


def test_offline_fills_in_within_ttl_when_online_is_stale_or_empty(vitals, store):
    feature_values_push(view=vitals, rows=[{"patient_id": 1, "event_timestamp": ago(minutes=90), "heart_rate": 50.0}])
    offline_only(vitals, [
        {"patient_id": 1, "event_timestamp": ago(minutes=20), "heart_rate": 61.0},
        {"patient_id": 1, "event_timestamp": ago(minutes=30), "heart_rate": 62.0},
        {"patient_id": 2, "event_timestamp": ago(minutes=70), "heart_rate": 99.0},  # beyond the TTL: never served
    ])  # fmt: skip
    heart = get_online_features([{"patient_id": 1}, {"patient_id": 2}], ["vitals:heart_rate"]).features[
        "vitals:heart_rate"
    ]
    assert heart.values == [61.0, None] and heart.sources == ["offline", "missing"]
    assert 1195 < heart.age_seconds[0] < 1220


def test_fallback_order_request_online_on_demand_offline_missing(vitals, store):
    @on_demand.on_demand_feature("vitals:steps", inputs=["vitals:heart_rate"])
    def steps_from_heart_rate(values):
        return int(values["vitals:heart_rate"] * 10)

    try:
        feature_values_push(view=vitals, rows=[
            {"patient_id": 1, "event_timestamp": ago(minutes=1), "heart_rate": 70.0, "steps": 5},
            {"patient_id": 2, "event_timestamp": ago(minutes=1), "heart_rate": 80.0},
        ])  # fmt: skip
        offline_only(vitals, [{"patient_id": 3, "event_timestamp": ago(minutes=5), "steps": 33}])
        rows = [{"patient_id": 1}, {"patient_id": 2}, {"patient_id": 3}, {"patient_id": 4}, {"patient_id": 1}]
        overrides = [{}, {}, {}, {}, {"vitals:steps": 1}]
        before = {s: counted("vitals", s) for s in ("request", "online", "on_demand", "offline", "missing")}
        steps = get_online_features(rows, ["vitals:heart_rate", "vitals:steps"], overrides=overrides).features[
            "vitals:steps"
        ]
        # patient 3 has no heart rate, so the on-demand function cannot run and the offline value is used
        assert steps.values == [5, 800, 33, None, 1]
        assert steps.sources == ["online", "on_demand", "offline", "missing", "request"]
        assert steps.age_seconds[4] == 0.0 and steps.age_seconds[1] == pytest.approx(60, abs=10)
        after = {s: counted("vitals", s) for s in before}
        assert {s: after[s] - before[s] for s in before} == {
            "request": 1, "online": 4, "on_demand": 1, "offline": 1, "missing": 3
        }  # fmt: skip
    finally:
        on_demand.unregister("vitals:steps")


def test_an_on_demand_function_that_fails_falls_back_to_offline(vitals, store):
    @on_demand.on_demand_feature("vitals:steps", inputs=["vitals:heart_rate"])
    def broken(values):
        raise ZeroDivisionError

    try:
        feature_values_push(view=vitals, rows=[{"patient_id": 1, "event_timestamp": ago(minutes=5), "heart_rate": 1.0}])
        offline_only(vitals, [{"patient_id": 1, "event_timestamp": ago(minutes=2), "heart_rate": 1.0, "steps": 3}])
        steps = get_online_features([{"patient_id": 1}], REFS).features["vitals:steps"]
        assert (steps.values, steps.sources) == ([3], ["offline"])
    finally:
        on_demand.unregister("vitals:steps")


def test_one_redis_round_trip_whatever_the_entity_count(vitals, settings, monkeypatch):
    settings.MODELWORKS_FEATURES_ONLINE_STORE = "redis"
    store = RedisOnlineStore(settings.REDIS_URL)
    monkeypatch.setattr("features.retrieval.online_store", lambda: store)
    now = to_us(timezone.now())
    store.write(vitals, {str(i): OnlineRecord(now, now, {"heart_rate": float(i)}) for i in range(300)})
    calls = []
    real = store.client.pipeline
    monkeypatch.setattr(store.client, "pipeline", lambda **kw: calls.append(kw) or real(**kw))
    answer = get_online_features([{"patient_id": i} for i in range(300)], ["vitals:heart_rate"])
    assert len(calls) == 1
    assert answer.features["vitals:heart_rate"].values == [float(i) for i in range(300)]


def test_bad_references_and_ids_are_named(vitals):
    with pytest.raises(ValidationError) as bad:
        get_online_features([{"patient_id": 1}], ["vitals", "nope:x", "vitals:bmi"])
    assert bad.value.message_dict["features"] == [
        "'vitals' is not a reference like 'view:feature'",
        "nope:x: no feature view named 'nope'",
        "vitals:bmi: view 'vitals' has no feature 'bmi'",
    ]
    with pytest.raises(ValidationError, match="row 1: patient_id must be an integer id"):
        get_online_features([{"patient_id": 1}, {"patient_id": "x"}], REFS)


def test_the_http_endpoint_answers_columns_and_needs_auth(api, vitals, store):
    feature_values_push(view=vitals, rows=[{"patient_id": 5, "event_timestamp": ago(seconds=30), "ward": "B"}])
    body = {"entities": [{"patient_id": 5}, {"patient_id": 6}], "features": ["vitals:ward"]}
    response = api.post("/api/v1/features/online", body, format="json")
    assert response.status_code == 200
    ward = response.json()["features"]["vitals:ward"]
    assert ward["values"] == ["B", None] and ward["sources"] == ["online", "missing"]
    assert APIClient().post("/api/v1/features/online", body, format="json").status_code in (401, 403)
    bad = api.post("/api/v1/features/online", {"entities": [{"patient_id": 5}], "features": ["x"]}, format="json")
    assert bad.status_code == 400 and "features" in bad.json()


def test_database_store_writes_only_newer_values(vitals, settings):
    from features.online import DatabaseOnlineStore

    store = DatabaseOnlineStore()
    assert store.write(vitals, {"1": OnlineRecord(10, 5, {"heart_rate": 1.0})}) == 1
    assert store.write(vitals, {"1": OnlineRecord(10, 5, {"heart_rate": 2.0})}) == 0  # same times: nothing new
    assert store.write(vitals, {"1": OnlineRecord(9, 50, {"heart_rate": 3.0})}) == 0  # older event
    assert store.write(vitals, {"1": OnlineRecord(10, 6, {"heart_rate": 4.0})}) == 1  # same event, created later
    assert store.read([(vitals, ["1", "2"])]) == [[OnlineRecord(10, 6, {"heart_rate": 4.0}), None]]
    assert store.count(vitals) == 1
    assert FeatureValue.objects.count() == 0


def test_after_the_feature_list_changes_old_online_rows_fall_back_to_offline(vitals, store):
    feature_values_push(view=vitals, rows=[{"patient_id": 1, "event_timestamp": ago(minutes=5), "heart_rate": 70.0}])
    grown = {**VITALS, "features": [*VITALS["features"], {"name": "bmi", "dtype": "float"}]}
    definitions_apply(entities=[], views=[grown])
    view_cache.clear()
    answer = get_online_features([{"patient_id": 1}], ["vitals:heart_rate", "vitals:bmi"])
    assert answer.features["vitals:heart_rate"].values == [70.0]
    # Redis keeps values by position, so a row written under the old feature list is not read; the database store
    # keeps them by name.
    by_position = isinstance(store, RedisOnlineStore)
    assert answer.features["vitals:heart_rate"].sources == ["offline" if by_position else "online"]
    assert answer.features["vitals:bmi"].sources == ["missing"]
    feature_view_materialize(view=FeatureView.objects.get(name="vitals"), start=timezone.now() - timedelta(hours=1))
    answer = get_online_features([{"patient_id": 1}], ["vitals:heart_rate"])
    assert answer.features["vitals:heart_rate"].sources == ["online"]


def test_api_keys_read_features_with_registry_read_and_push_with_registry_write(vitals, store):
    from serving.keys import api_key_create

    reader = APIClient(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(name='r', scopes=['registry:read'])[1]}")
    writer = APIClient(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(name='w', scopes=['registry:write'])[1]}")
    predictor = APIClient(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(name='p', scopes=['predict:*'])[1]}")
    body = {"entities": [{"patient_id": 5}], "features": ["vitals:ward"]}
    rows = {"rows": [{"patient_id": 5, "event_timestamp": ago(seconds=30), "ward": "B"}]}
    assert reader.post("/api/v1/features/vitals/push", rows, format="json").status_code == 403
    assert writer.post("/api/v1/features/vitals/push", rows, format="json").status_code == 200
    assert reader.post("/api/v1/features/online", body, format="json").json()["features"]["vitals:ward"]["values"] == [
        "B"
    ]
    assert predictor.post("/api/v1/features/online", body, format="json").status_code == 403


def test_override_values_are_checked_against_the_feature_types(vitals):
    rows = [{"patient_id": 1}, {"patient_id": 2}]
    with pytest.raises(ValidationError) as bad:
        get_online_features(rows, REFS, overrides=[{"vitals:steps": 1.5}, {"vitals:ward": "A"}])
    assert bad.value.message_dict["overrides"] == [
        "row 0: vitals:steps must be an integer, got 1.5",
        "row 1: vitals:ward is not one of the requested features",
    ]
    with pytest.raises(ValidationError, match="one object per entity row"):
        get_online_features(rows, REFS, overrides=[{}])
