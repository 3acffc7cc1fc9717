"""One timestamp parser for every input of the feature store (features.schema.parse_timestamp): ingest, push,
historical retrieval (service, API, command) and the client all accept mixed-precision ISO-8601 and name a bad value
by row and field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import given
from hypothesis import strategies as st

from features.historical import get_historical_features
from features.models import FeatureValue
from features.schema import parse_timestamp, parse_timestamps

MIXED = ["2024-01-03T00:35:42Z", "2024-01-03T07:20:07.030864Z"]
LOW, HIGH = datetime(1971, 1, 1), datetime(2200, 1, 1)  # noqa: DTZ001 (hypothesis takes naive bounds)
T = [datetime(2024, 1, 3, 0, 35, 42, tzinfo=UTC), datetime(2024, 1, 3, 7, 20, 7, 30864, tzinfo=UTC)]


@given(
    moment=st.datetimes(min_value=LOW, max_value=HIGH, timezones=st.just(UTC)),
    timespec=st.sampled_from(["seconds", "milliseconds", "microseconds", "auto"]),
    zulu=st.booleans(),
)
def test_iso_8601_of_any_precision_reads_back_to_the_same_instant(moment, timespec, zulu):
    text = moment.isoformat(timespec=timespec)
    if zulu:
        text = text.replace("+00:00", "Z")
    expected = pd.Timestamp(text).to_pydatetime()  # pandas' own ISO-8601 reader as the oracle
    assert parse_timestamp(text) == expected
    assert parse_timestamp(pd.Timestamp(text)) == expected
    assert parse_timestamp(np.datetime64(moment.replace(tzinfo=None))) == moment
    assert parse_timestamp(moment.timestamp()) == datetime.fromtimestamp(moment.timestamp(), tz=UTC)


def test_the_parser_reads_naive_as_utc_and_refuses_what_is_not_a_time():
    assert parse_timestamp("2024-01-03T00:35:42") == T[0]
    assert parse_timestamp("2024-01-03T01:35:42+01:00") == T[0]
    assert parse_timestamp(int(T[0].timestamp())) == T[0]
    assert parse_timestamp(f" {int(T[0].timestamp())} ") == T[0]  # a CSV cell of epoch seconds
    assert parse_timestamp(f"{T[1].timestamp():.6f}") == T[1]
    assert parse_timestamp("20240103") == datetime(2024, 1, 3, tzinfo=UTC)  # ISO-8601's basic date, not epoch
    nanoseconds = "2024-01-03T07:20:07.030864123Z"  # past microseconds: dropped, in text and in a Timestamp alike
    assert parse_timestamp(nanoseconds) == parse_timestamp(pd.Timestamp(nanoseconds)) == T[1]
    for bad in [
        "yesterday",
        "",
        "2024-13-01",
        "1e9",
        "12345678901234",
        True,
        None,
        float("nan"),
        pd.NaT,
        np.datetime64("NaT"),
        [1],
    ]:
        assert parse_timestamp(bad) is None, bad


def test_a_column_of_timestamps_names_its_first_bad_row():
    assert parse_timestamps(MIXED, "event_timestamp") == T
    with pytest.raises(ValidationError) as caught:
        parse_timestamps([*MIXED, "2024-02-30T00:00:00Z"], "ts")
    assert caught.value.message_dict == {
        "ts": ["row 2: '2024-02-30T00:00:00Z' is not an ISO-8601 time or epoch seconds"]
    }


@pytest.mark.django_db
def test_historical_retrieval_accepts_mixed_precision_entity_timestamps(vitals):
    FeatureValue.objects.create(view=vitals, entity_key="1", event_ts=T[0] - timedelta(minutes=1),
                                created_ts=T[0] - timedelta(minutes=1), data={"heart_rate": 61.0})  # fmt: skip
    frame = pd.DataFrame({"patient_id": [1, 1], "event_timestamp": MIXED})
    result = get_historical_features(frame, ["vitals:heart_rate"])
    assert result["vitals:heart_rate"].fillna(-1).tolist() == [61.0, -1]  # the second row is past the 1 h TTL
    with pytest.raises(ValidationError) as caught:
        get_historical_features(pd.DataFrame({"patient_id": [1, 1], "event_timestamp": [MIXED[0], "soon"]}),
                                ["vitals:heart_rate"])  # fmt: skip
    assert caught.value.message_dict == {"event_timestamp": ["row 1: 'soon' is not an ISO-8601 time or epoch seconds"]}


@pytest.mark.django_db
def test_the_historical_api_and_command_accept_mixed_precision(api, vitals, tmp_path):
    FeatureValue.objects.create(view=vitals, entity_key="1", event_ts=T[1] - timedelta(minutes=1),
                                created_ts=T[1] - timedelta(minutes=1), data={"heart_rate": 62.0})  # fmt: skip
    rows = [{"patient_id": 1, "event_timestamp": t} for t in MIXED]
    response = api.post("/api/v1/features/historical/", {"entity_rows": rows, "features": ["vitals:heart_rate"]},
                        format="json")  # fmt: skip
    assert response.status_code == 200, response.json()
    assert [row[-1] for row in response.json()["rows"]] == [None, 62.0]
    rows[0]["event_timestamp"] = "2024-01-03T25:00:00Z"
    response = api.post("/api/v1/features/historical/", {"entity_rows": rows, "features": ["vitals:heart_rate"]},
                        format="json")  # fmt: skip
    assert response.status_code == 400
    assert response.json() == {
        "event_timestamp": ["row 0: '2024-01-03T25:00:00Z' is not an ISO-8601 time or epoch seconds"]
    }

    source, output = tmp_path / "entities.csv", tmp_path / "out.csv"
    pd.DataFrame({"patient_id": [1, 1], "event_timestamp": MIXED}).to_csv(source, index=False)
    call_command("historical_features", str(source), str(output), "--features", "vitals:heart_rate")
    assert pd.read_csv(output)["vitals:heart_rate"].tolist()[1] == 62.0
    pd.DataFrame({"patient_id": [1], "event_timestamp": ["noon"]}).to_csv(source, index=False)
    with pytest.raises(CommandError, match=r"row 0: 'noon' is not an ISO-8601 time"):
        call_command("historical_features", str(source), str(output), "--features", "vitals:heart_rate")


@pytest.mark.django_db
def test_historical_epoch_seconds_mean_seconds_as_on_every_write(vitals):
    FeatureValue.objects.create(view=vitals, entity_key="1", event_ts=T[0], created_ts=T[0], data={"heart_rate": 1.0})
    frame = pd.DataFrame({"patient_id": [1], "event_timestamp": [int(T[0].timestamp())]})
    assert get_historical_features(frame, ["vitals:heart_rate"])["vitals:heart_rate"].tolist() == [1.0]


@pytest.mark.django_db
def test_ingest_and_push_accept_mixed_precision_and_name_a_bad_row(api, vitals, tmp_path):
    path = tmp_path / "vitals.csv"
    pd.DataFrame({"patient_id": [1, 2], "event_timestamp": MIXED, "heart_rate": [1.0, 2.0]}).to_csv(path, index=False)
    call_command("ingest_features", "vitals", str(path), "--no-progress")
    assert sorted(FeatureValue.objects.values_list("event_ts", flat=True)) == T
    pd.DataFrame({"patient_id": [1, 2], "event_timestamp": [MIXED[0], "2024-01-03T07:60:00Z"]}).to_csv(
        path, index=False
    )
    with pytest.raises(CommandError, match=r"vitals.csv row 2, event_timestamp: is missing or not an ISO-8601"):
        call_command("ingest_features", "vitals", str(path), "--no-progress")

    rows = [{"patient_id": 3, "event_timestamp": t, "heart_rate": 3.0} for t in MIXED]
    response = api.post("/api/v1/features/vitals/push", {"rows": rows}, format="json")
    assert response.status_code == 200, response.json()
    assert sorted(FeatureValue.objects.filter(entity_key="3").values_list("event_ts", flat=True)) == T


@pytest.mark.django_db
def test_one_csv_of_epoch_seconds_reads_the_same_as_feature_rows_and_as_entity_rows(vitals, tmp_path):
    path, output = tmp_path / "rows.csv", tmp_path / "out.csv"
    seconds = [int(T[0].timestamp()), int(T[0].timestamp()) + 60]
    pd.DataFrame({"patient_id": [1, 2], "event_timestamp": seconds, "heart_rate": [1.0, 2.0]}).to_csv(path, index=False)
    call_command("ingest_features", "vitals", str(path), "--no-progress")  # cells are text here
    assert sorted(FeatureValue.objects.values_list("event_ts", flat=True)) == [T[0], T[0] + timedelta(minutes=1)]
    call_command("historical_features", str(path), str(output), "--features", "vitals:heart_rate")  # integers here
    assert pd.read_csv(output)["vitals:heart_rate"].tolist() == [1.0, 2.0]
