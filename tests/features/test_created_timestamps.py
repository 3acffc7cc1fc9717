"""Created timestamps given per row (ingest, push; the column named per view) and the tie rule every read applies:
latest event time, then latest created time, then last written."""

from __future__ import annotations

import importlib
import random
import zlib
from datetime import UTC, datetime, timedelta

import orjson
import pandas as pd
import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.definitions import definitions_apply
from features.historical import get_historical_features
from features.ingest import feature_file_ingest
from features.models import FeatureValue, FeatureView, IngestJob
from features.online import OnlineRecord, RedisOnlineStore, redis_key
from features.retrieval import get_online_features, view_cache
from features.services import RowsRejected, feature_values_push, feature_view_materialize
from tests.features.conftest import PATIENT, VITALS, ago

pytestmark = pytest.mark.django_db
T0 = datetime(2024, 1, 1, tzinfo=UTC)
PUSH = "/api/v1/features/vitals/push"


def minute(m: int) -> datetime:
    return T0 + timedelta(minutes=m)


def test_ingest_stores_each_rows_created_time_and_now_where_it_has_none(vitals, tmp_path):
    path = tmp_path / "vitals.csv"
    pd.DataFrame({
        "patient_id": [1, 2],
        "event_timestamp": [minute(0).isoformat(), minute(1).isoformat()],
        "created_timestamp": ["2024-01-01T00:05:00Z", ""],
        "heart_rate": [60.0, 61.0],
    }).to_csv(path, index=False)  # fmt: skip
    before = timezone.now()
    call_command("ingest_features", "vitals", str(path), "--no-progress")
    one, two = FeatureValue.objects.order_by("entity_key")
    assert one.created_ts == minute(5) and one.data["heart_rate"] == 60.0 and "created_timestamp" not in one.data
    assert before <= two.created_ts == two.written_at <= timezone.now()
    assert one.written_at == two.written_at


def test_a_parquet_backfill_with_old_created_times_is_visible_as_of_created(vitals, tmp_path):
    path = tmp_path / "backfill.parquet"
    pd.DataFrame({
        "patient_id": [1, 1],
        "event_timestamp": [minute(0), minute(10)],
        "created_timestamp": [minute(1), minute(11)],  # when the values were known, long before today's ingest
        "heart_rate": [60.0, 70.0],
    }).to_parquet(path, index=False)  # fmt: skip
    feature_file_ingest(view=vitals, path=path)
    entities = pd.DataFrame({"patient_id": [1, 1, 1], "event_timestamp": [minute(0), minute(5), minute(12)]})
    result = get_historical_features(entities, ["vitals:heart_rate"], as_of_created=True)
    assert result["vitals:heart_rate"].fillna(-1).tolist() == [-1, 60.0, 70.0]  # minute 0: not created yet


def test_the_created_column_is_named_per_view_and_checked(db, tmp_path):
    definitions_apply(entities=[PATIENT], views=[{**VITALS, "created_timestamp_column": "known_at"}])
    view = FeatureView.objects.select_related("entity").get(name="vitals")
    assert view.created_timestamp_column == "known_at"
    rows = [{"patient_id": 1, "event_timestamp": minute(0).isoformat(), "known_at": minute(3).isoformat()}]
    feature_values_push(view=view, rows=rows)
    assert FeatureValue.objects.get().created_ts == minute(3)
    with pytest.raises(RowsRejected) as caught:  # the default name is now an unknown column of this view
        feature_values_push(view=view, rows=[{**rows[0], "created_timestamp": minute(3).isoformat()}])
    assert caught.value.errors[0]["field"] == "created_timestamp"
    assert definitions_apply(entities=[], views=[{**VITALS, "created_timestamp_column": "known_at"}]) == []
    for bad, message in [("heart_rate", "is a feature"), ("patient_id", "is the entity's join key"),
                         ("event_timestamp", "is the event time"), ("Known At", "lowercase")]:  # fmt: skip
        with pytest.raises(ValidationError, match=message):
            definitions_apply(entities=[], views=[{**VITALS, "created_timestamp_column": bad}])


def test_a_bad_or_future_created_time_is_named_by_row_and_field(api, vitals):
    good = {"patient_id": 1, "event_timestamp": ago(minutes=5), "heart_rate": 1.0}
    rows = [
        {**good, "created_timestamp": ago(minutes=1)},
        {**good, "created_timestamp": "last week"},
        {**good, "created_timestamp": (timezone.now() + timedelta(hours=1)).isoformat()},
    ]
    response = api.post(PUSH, {"rows": rows}, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [(e["row"], e["field"]) for e in errors] == [(1, "created_timestamp"), (2, "created_timestamp")]
    assert "is not an ISO-8601 time" in errors[0]["message"] and "is in the future" in errors[1]["message"]
    assert not FeatureValue.objects.exists()


def test_ingest_names_a_bad_created_time(vitals, tmp_path):
    path = tmp_path / "vitals.csv"
    created = [minute(1).isoformat(), "2024-01-01T24:61:00Z"]
    frame = {"patient_id": [1, 2], "event_timestamp": [minute(0).isoformat()] * 2, "created_timestamp": created}
    pd.DataFrame(frame).to_csv(path, index=False)
    with pytest.raises(CommandError, match=r"vitals.csv row 2, created_timestamp: is not an ISO-8601 time"):
        call_command("ingest_features", "vitals", str(path), "--no-progress")


@pytest.mark.parametrize("online", [True, False])
def test_online_reads_take_the_latest_created_value_at_equal_event_times(api, vitals, store, online):
    event = ago(minutes=5)
    # The value created later arrives first; the one created earlier (a correction of an older run) comes after.
    for created, rate in [(ago(minutes=1), 70.0), (ago(minutes=3), 50.0)]:
        rows = [{"patient_id": 1, "event_timestamp": event, "created_timestamp": created, "heart_rate": rate}]
        assert api.post(PUSH, {"rows": rows}, format="json").status_code == 200
    if not online:
        store.drop(vitals)
    heart = get_online_features([{"patient_id": 1}], ["vitals:heart_rate"]).features["vitals:heart_rate"]
    assert (heart.values, heart.sources) == ([70.0], ["online" if online else "offline"])
    assert feature_view_materialize(view=vitals, start=timezone.now() - timedelta(hours=1)).rows_written == (
        0 if online else 1
    )
    assert store.read([(vitals, ["1"])])[0][0].data["heart_rate"] == 70.0


def test_on_equal_event_and_created_times_the_last_written_wins_everywhere(api, vitals, store):
    event, created = ago(minutes=5), ago(minutes=2)
    for rate in (1.0, 2.0, 3.0):
        rows = [{"patient_id": 1, "event_timestamp": event, "created_timestamp": created, "heart_rate": rate}]
        api.post(PUSH, {"rows": rows}, format="json")
    assert store.read([(vitals, ["1"])])[0][0].data["heart_rate"] == 3.0
    # A range run copies all three again in write order: the online value never moves back, nothing is rewritten.
    assert feature_view_materialize(view=vitals, start=timezone.now() - timedelta(hours=1)).rows_written == 0
    assert store.read([(vitals, ["1"])])[0][0].data["heart_rate"] == 3.0
    store.drop(vitals)
    heart = get_online_features([{"patient_id": 1}], ["vitals:heart_rate"]).features["vitals:heart_rate"]
    assert (heart.values, heart.sources) == ([3.0], ["offline"])
    entities = pd.DataFrame({"patient_id": [1], "event_timestamp": [timezone.now()]})
    assert get_historical_features(entities, ["vitals:heart_rate"])["vitals:heart_rate"].tolist() == [3.0]
    # One push holding all three: the last row of the request wins.
    rows = [{"patient_id": 2, "event_timestamp": event, "created_timestamp": created, "heart_rate": r} for r in (9, 8)]
    assert api.post(PUSH, {"rows": rows}, format="json").json() == {"stored": 2, "online": 1}
    assert store.read([(vitals, ["2"])])[0][0].data["heart_rate"] == 8.0


def test_incremental_materialization_copies_a_backfill_by_when_it_was_written(vitals, store, settings):
    settings.MODELWORKS_FEATURES_MATERIALIZE_LAG_S = 0
    feature_view_materialize(view=vitals)  # the watermark is now
    rows = [{"patient_id": 1, "event_timestamp": ago(minutes=30), "created_timestamp": ago(minutes=29),
             "heart_rate": 42.0}]  # fmt: skip
    feature_values_push(view=vitals, rows=rows)
    store.drop(vitals)  # as if the push's online write had failed
    run = feature_view_materialize(view=vitals)
    assert (run.rows_read, run.rows_written) == (1, 1)
    assert store.read([(vitals, ["1"])])[0][0].data["heart_rate"] == 42.0


def _oracle(rows, entity_rows, ttl_min: int, as_of_created: bool) -> list[float | None]:
    """Brute force: of the values in [t - TTL, t] (created by t if asked), the latest event, then latest created."""
    answers = []
    for entity, at in entity_rows:
        ok = [r for r in rows if r[0] == entity and at - ttl_min <= r[1] <= at and (not as_of_created or r[2] <= at)]
        answers.append(max(ok, key=lambda r: (r[1], r[2]))[3] if ok else None)
    return answers


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    # Small domains: equal event times with different created times come up often. (entity, event, created) is
    # unique per row: rows equal in all three are decided by write order, which shuffling changes on purpose.
    keys=st.lists(
        st.tuples(st.integers(1, 2), st.integers(0, 8), st.integers(0, 10)), unique=True, min_size=1, max_size=20
    ),  # fmt: skip
    entity_rows=st.lists(st.tuples(st.integers(1, 3), st.integers(-1, 14)), min_size=1, max_size=12),
    ttl_min=st.integers(1, 5),
    seed=st.integers(0, 2**32),
    chunk=st.integers(1, 7),
)
def test_the_same_rows_ingested_in_any_order_give_the_same_training_data(vitals, tmp_path, keys, entity_rows,
                                                                        ttl_min, seed, chunk):  # fmt: skip
    FeatureView.objects.filter(pk=vitals.pk).update(ttl_seconds=ttl_min * 60)
    view_cache.clear()
    view = FeatureView.objects.select_related("entity").get(pk=vitals.pk)
    rows = [(e, ev, cr, float(i)) for i, (e, ev, cr) in enumerate(keys)]
    entities = pd.DataFrame({"patient_id": [e for e, _ in entity_rows],
                             "event_timestamp": [minute(m) for _, m in entity_rows]})  # fmt: skip
    answers = []
    for order in (rows, random.Random(seed).sample(rows, len(rows)), rows[::-1]):
        FeatureValue.objects.all().delete()
        IngestJob.objects.all().delete()
        path = tmp_path / "rows.csv"
        pd.DataFrame({
            "patient_id": [r[0] for r in order],
            "event_timestamp": [minute(r[1]).isoformat() for r in order],
            "created_timestamp": [minute(r[2]).isoformat() for r in order],
            "heart_rate": [r[3] for r in order],
        }).to_csv(path, index=False)  # fmt: skip
        feature_file_ingest(view=view, path=path, chunk_size=chunk)
        answers.append([
            get_historical_features(entities, ["vitals:heart_rate"], as_of_created=flag)["vitals:heart_rate"]
            .astype(object).where(lambda s: s.notna(), None).tolist()
            for flag in (False, True)
        ])  # fmt: skip
    assert answers[0] == answers[1] == answers[2]
    assert answers[0] == [_oracle(rows, entity_rows, ttl_min, flag) for flag in (False, True)]


def test_both_online_stores_order_by_event_then_created_then_value_id(vitals, store):
    assert store.write(vitals, {"1": OnlineRecord(10, 5, {"heart_rate": 1.0}, 7)}) == 1
    assert store.write(vitals, {"1": OnlineRecord(10, 5, {"heart_rate": 2.0}, 6)}) == 0  # written before it
    assert store.write(vitals, {"1": OnlineRecord(10, 5, {"heart_rate": 1.0}, 7)}) == 0  # itself again
    assert store.write(vitals, {"1": OnlineRecord(10, 4, {"heart_rate": 3.0}, 9)}) == 0  # created earlier
    assert store.write(vitals, {"1": OnlineRecord(10, 5, {"heart_rate": 4.0}, 8)}) == 1  # written after it
    assert store.write(vitals, {"1": OnlineRecord(11, 0, {"heart_rate": 5.0}, 1)}) == 1  # a later event
    (record,), = store.read([(vitals, ["1"])])  # fmt: skip
    assert (record.event_us, record.created_us, record.value_id, record.data["heart_rate"]) == (11, 0, 1, 5.0)


def test_a_redis_value_of_the_layout_before_value_ids_reads_as_absent_and_is_replaced(vitals, settings):
    store = RedisOnlineStore(settings.REDIS_URL)
    old_schema = zlib.crc32("\x1f".join(vitals.feature_names).encode())
    store.client.hset(redis_key(vitals), "1", orjson.dumps([10, 5, old_schema, 72.0, 3, None, "A"]))
    assert store.read([(vitals, ["1"])]) == [[None]]  # the offline fallback serves it meanwhile
    assert store.write(vitals, {"1": OnlineRecord(10, 5, {"heart_rate": 1.0}, 1)}) == 1  # same times, new layout
    (record,), = store.read([(vitals, ["1"])])  # fmt: skip
    assert (record.event_us, record.created_us, record.value_id, record.data["heart_rate"]) == (10, 5, 1, 1.0)
    store.client.hset(redis_key(vitals), "2", orjson.dumps([10, 5, old_schema, 72.0, 3, None, "A"]))
    assert store.write(vitals, {"2": OnlineRecord(9, 5, {"heart_rate": 1.0}, 1)}) == 0  # an older event does not


def test_a_view_with_a_feature_named_created_timestamp_keeps_it_as_a_feature(db):
    features = [*VITALS["features"], {"name": "created_timestamp", "dtype": "string"}]
    plan = definitions_apply(entities=[PATIENT], views=[{**VITALS, "features": features}])
    view = FeatureView.objects.select_related("entity").get(name="vitals")
    assert view.created_timestamp_column == ""  # the default name was taken: no created times
    row = {"patient_id": 1, "event_timestamp": minute(0).isoformat(), "created_timestamp": "account opened in May"}
    stored = feature_values_push(view=view, rows=[row])
    assert FeatureValue.objects.get().data["created_timestamp"] == "account opened in May"
    assert FeatureValue.objects.get().created_ts == FeatureValue.objects.get().written_at and stored["stored"] == 1
    assert (
        "created timestamp column (none) -> known_at"
        in definitions_apply(
            entities=[], views=[{**VITALS, "features": features, "created_timestamp_column": "known_at"}]
        )[0]
    )
    with pytest.raises(ValidationError, match="is a feature of the view"):
        definitions_apply(entities=[], views=[{**VITALS, "features": features,
                                               "created_timestamp_column": "created_timestamp"}])  # fmt: skip
    assert plan and definitions_apply(entities=[], views=[{**VITALS, "created_timestamp_column": ""}])
    assert FeatureView.objects.get(name="vitals").created_timestamp_column == ""


def test_the_migration_leaves_a_feature_named_created_timestamp_alone(db):
    from django.apps import apps

    migration = importlib.import_module("features.migrations.0002_created_timestamps_and_write_order")
    features = [*VITALS["features"], {"name": "created_timestamp", "dtype": "string"}]
    definitions_apply(entities=[PATIENT], views=[VITALS, {**VITALS, "name": "other", "features": features}])
    FeatureView.objects.update(created_timestamp_column="created_timestamp")  # as the AddField leaves every view
    migration.no_created_column_where_it_is_a_feature(apps, None)
    assert dict(FeatureView.objects.values_list("name", "created_timestamp_column")) == {
        "vitals": "created_timestamp", "other": ""
    }  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=st.lists(
        st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)), unique=True, min_size=1, max_size=15
    ),  # fmt: skip
    seed=st.integers(0, 2**32),
    batch=st.integers(1, 5),
)
def test_the_same_rows_pushed_in_any_order_give_the_same_online_values(vitals, store, keys, seed, batch):
    """(entity, minutes before now of the event, minutes of created after the event): pushed in shuffled batches,
    the online value per entity, its offline fallback and training data are the oracle's latest (event, created)."""
    now = timezone.now()
    rows = [{"patient_id": e, "event_timestamp": (now - timedelta(minutes=ev)).isoformat(),
             "created_timestamp": (now - timedelta(minutes=ev) + timedelta(seconds=cr)).isoformat(),
             "heart_rate": float(i)} for i, (e, ev, cr) in enumerate(keys)]  # fmt: skip
    expected = {}
    for e, ev, cr in keys:
        best = expected.get(e)
        if best is None or (-ev, cr) > (-best[0], best[1]):
            expected[e] = (ev, cr)
    expected_rate = {e: float(keys.index((e, *best))) for e, best in expected.items()}
    entities = [{"patient_id": e} for e in sorted(expected_rate)]
    seen = []
    for order in (rows, random.Random(seed).sample(rows, len(rows))):
        FeatureValue.objects.all().delete()
        store.drop(vitals)
        for start in range(0, len(order), batch):
            feature_values_push(view=vitals, rows=order[start : start + batch])
        online = get_online_features(entities, ["vitals:heart_rate"]).features["vitals:heart_rate"]
        assert online.sources == ["online"] * len(entities)
        store.drop(vitals)
        offline = get_online_features(entities, ["vitals:heart_rate"]).features["vitals:heart_rate"]
        frame = pd.DataFrame({"patient_id": sorted(expected_rate), "event_timestamp": [now] * len(entities)})
        training = get_historical_features(frame, ["vitals:heart_rate"])["vitals:heart_rate"].tolist()
        seen.append((online.values, offline.values, training))
    want = [expected_rate[e] for e in sorted(expected_rate)]
    assert seen[0] == seen[1] == (want, want, want)


def test_the_view_api_sets_and_shows_the_created_column(api, db):
    definitions_apply(entities=[PATIENT], views=[])
    response = api.post("/api/v1/features/views/", {**VITALS, "created_timestamp_column": "known_at"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["created_timestamp_column"] == "known_at"
    assert [line.split(" on ")[0] for line in response.json()["changes"]] == ["create view vitals"]
    bad = api.post("/api/v1/features/views/", {**VITALS, "created_timestamp_column": "steps"}, format="json")
    assert bad.status_code == 400
    assert bad.json() == {"vitals.created_timestamp_column": ["'steps' is a feature of the view"]}
    changed = api.post("/api/v1/features/views/", VITALS, format="json").json()
    assert changed["changes"] == ["update view vitals: created timestamp column known_at -> created_timestamp"]
