"""Point-in-time training data, checked against a brute-force pandas oracle on random data (ties, gaps, TTL edges,
late-arriving values), plus the command that writes CSV/Parquet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.historical import get_historical_features
from features.models import FeatureValue, FeatureView
from features.retrieval import view_cache

pytestmark = pytest.mark.django_db
T0 = datetime(2024, 1, 1, tzinfo=UTC)
REFS = ["vitals:heart_rate", "vitals:steps"]


def minute(m: int) -> datetime:
    return T0 + timedelta(minutes=m)


def store(view: FeatureView, values: list[tuple[int, int, int]]) -> None:
    """(entity, event minute, created minute) per value, inserted in this order; heart_rate = its index."""
    FeatureValue.objects.bulk_create(
        FeatureValue(view=view, entity_key=str(e), event_ts=minute(ev), created_ts=minute(cr),
                     data={"heart_rate": float(i), "steps": i * 10})
        for i, (e, ev, cr) in enumerate(values)
    )  # fmt: skip


def oracle(values, entity_rows, ttl_min: int, as_of_created: bool) -> list[float | None]:
    """Brute force in pandas: every value checked against every row."""
    frame = pd.DataFrame(values, columns=["entity", "event", "created"]).reset_index(names="order")
    answers = []
    for entity, at in entity_rows:
        ok = frame[(frame.entity == entity) & (frame.event <= at) & (frame.event >= at - ttl_min)]
        if as_of_created:
            ok = ok[ok.created <= at]
        if ok.empty:
            answers.append(None)
        else:
            answers.append(float(ok.sort_values(["event", "created", "order"]).iloc[-1]["order"]))
    return answers


def entity_frame(entity_rows) -> pd.DataFrame:
    return pd.DataFrame(
        {"patient_id": [e for e, _ in entity_rows], "event_timestamp": [minute(m) for _, m in entity_rows]}
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    # Small domains on purpose: equal event times, rows exactly on a TTL edge and late values then come up often.
    values=st.lists(st.tuples(st.integers(1, 2), st.integers(0, 12), st.integers(0, 16)), max_size=25),
    entity_rows=st.lists(st.tuples(st.integers(1, 3), st.integers(-2, 18)), min_size=1, max_size=20),
    ttl_min=st.integers(1, 6),
    as_of_created=st.booleans(),
)
def test_point_in_time_join_matches_the_brute_force_oracle(vitals, values, entity_rows, ttl_min, as_of_created):
    FeatureValue.objects.all().delete()
    FeatureView.objects.filter(pk=vitals.pk).update(ttl_seconds=ttl_min * 60)
    view_cache.clear()
    store(vitals, values)
    frame = entity_frame(entity_rows)
    result = get_historical_features(frame, REFS, as_of_created=as_of_created)
    got = [None if pd.isna(v) else float(v) for v in result["vitals:heart_rate"]]
    assert got == oracle(values, entity_rows, ttl_min, as_of_created)
    steps = [None if pd.isna(v) else int(v) for v in result["vitals:steps"]]
    assert steps == [None if v is None else int(v) * 10 for v in got]  # both features come from the same value
    assert result[["patient_id", "event_timestamp"]].equals(frame)


def test_edges_ties_gaps_and_late_values(vitals):
    FeatureView.objects.filter(pk=vitals.pk).update(ttl_seconds=600)  # 10 minutes
    store(vitals, [
        (1, 0, 0),    # 0
        (1, 20, 20),  # 1: same event time as 2 but created earlier
        (1, 20, 25),  # 2: wins the tie
        (1, 40, 50),  # 3: a late backfill, created 10 minutes after its event time
    ])  # fmt: skip
    rows = [(1, 0), (1, 10), (1, 11), (1, 15), (1, 20), (1, 30), (1, 31), (1, 45), (2, 20), (1, -1)]
    plain = get_historical_features(entity_frame(rows), ["vitals:heart_rate"])["vitals:heart_rate"]
    assert [None if pd.isna(v) else v for v in plain] == [0.0, 0.0, None, None, 2.0, 2.0, None, 3.0, None, None]
    strict = get_historical_features(entity_frame(rows), ["vitals:heart_rate"], as_of_created=True)
    # at minute 20 value 2 (created 25) is not yet written: value 1 is what a model trained then could have seen
    assert [None if pd.isna(v) else v for v in strict["vitals:heart_rate"]] == [
        0.0, 0.0, None, None, 1.0, 2.0, None, None, None, None
    ]  # fmt: skip


def test_bad_requests_are_named(vitals):
    with pytest.raises(ValidationError, match="missing column"):
        get_historical_features(pd.DataFrame({"patient_id": [1]}), REFS)
    with pytest.raises(ValidationError, match="row 1: .soon. is not an ISO-8601 time"):
        get_historical_features(pd.DataFrame({"patient_id": [1, 2], "event_timestamp": ["2024-01-01", "soon"]}), REFS)
    empty = get_historical_features(pd.DataFrame({"patient_id": [], "event_timestamp": []}), REFS)
    assert list(empty.columns) == ["patient_id", "event_timestamp", *REFS] and empty.empty


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_the_command_writes_training_data(vitals, tmp_path, capsys, suffix):
    store(vitals, [(1, 0, 0), (2, 5, 5)])
    source = tmp_path / "entities.csv"
    entity_frame([(2, 6), (1, 1), (3, 1)]).to_csv(source, index=False)
    output = tmp_path / f"train{suffix}"
    call_command("historical_features", str(source), str(output), "--features", ",".join(REFS))
    assert "3 rows (2 with every feature), 2 features" in capsys.readouterr().out
    written = pd.read_parquet(output) if suffix == ".parquet" else pd.read_csv(output)
    assert written["patient_id"].tolist() == [2, 1, 3]
    assert written["vitals:heart_rate"].tolist()[:2] == [1.0, 0.0] and pd.isna(written["vitals:heart_rate"][2])
    with pytest.raises(CommandError, match="no feature view named 'nope'"):
        call_command("historical_features", str(source), str(output), "--features", "nope:x")


def test_training_data_is_not_cut_short_by_a_web_processs_statement_bound(vitals, settings):
    """Web processes bound every statement (config/settings.py); the point-in-time join a user waits for lifts it."""
    from django.db import connection

    store(vitals, [(e, m, m) for e in range(50) for m in range(0, 100, 5)])
    rows = [(e, m) for e in range(50) for m in range(100)]
    settings.MODELWORKS_PROCESS = "web"
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 1")  # a web process's bound, shrunk so that the join outlasts it
    try:
        result = get_historical_features(entity_frame(rows), REFS)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")  # the test's own transaction ends with constraint checks
    assert result["vitals:heart_rate"].notna().sum() > 0 and len(result) == len(rows)
