"""Batch ingest from CSV and Parquet: chunked, all-or-nothing per chunk, resumable, by command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from features.ingest import feature_file_ingest
from features.models import FeatureValue, IngestJob

pytestmark = pytest.mark.django_db
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def frame(count: int) -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": range(count),
        "event_timestamp": [T0 + timedelta(minutes=i) for i in range(count)],
        "heart_rate": [60.0 + i for i in range(count)],
        "steps": [i * 100 for i in range(count)],
        "ward": ["A" if i % 2 else None for i in range(count)],
    })  # fmt: skip


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_file_is_ingested_in_chunks_with_its_types(vitals, tmp_path, capsys, suffix):
    path = tmp_path / f"vitals{suffix}"
    data = frame(25)
    data.to_parquet(path, index=False) if suffix == ".parquet" else data.to_csv(path, index=False)
    call_command("ingest_features", "vitals", str(path), "--chunk-size", "10", "--no-progress")
    assert "25 rows ingested" in capsys.readouterr().out
    stored = FeatureValue.objects.filter(view=vitals).order_by("entity_key")
    assert stored.count() == 25
    first = stored.get(entity_key="3")
    assert first.event_ts == T0 + timedelta(minutes=3)
    assert first.data == {"heart_rate": 63.0, "steps": 300, "smoker": None, "ward": "A"}
    assert isinstance(first.data["steps"], int)
    assert len({v.created_ts for v in stored}) == 3  # one commit per chunk
    call_command("ingest_features", "vitals", str(path), "--no-progress")  # the same file again: already done
    assert FeatureValue.objects.count() == 25


def test_an_interrupted_ingest_resumes_after_the_last_committed_chunk(vitals, tmp_path):
    path = tmp_path / "vitals.csv"
    frame(50).to_csv(path, index=False)
    seen = []

    def interrupt_after_two_chunks(rows: int) -> None:
        seen.append(rows)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        feature_file_ingest(view=vitals, path=path, chunk_size=10, progress=interrupt_after_two_chunks)
    assert FeatureValue.objects.count() == 20 and IngestJob.objects.get().rows_done == 20
    job = feature_file_ingest(view=vitals, path=path, chunk_size=10)
    assert job.rows_done == 50 and job.finished_at is not None
    assert sorted(int(k) for k in FeatureValue.objects.values_list("entity_key", flat=True)) == list(range(50))


def test_a_bad_row_stops_the_ingest_naming_it_and_keeps_earlier_chunks(vitals, tmp_path):
    data = frame(30).astype({"steps": object})
    data.loc[24, "steps"] = "many"
    path = tmp_path / "bad.csv"
    data.to_csv(path, index=False)
    with pytest.raises(CommandError, match=r"^bad.csv row 25, steps: must be an integer, got 'many'"):
        call_command("ingest_features", "vitals", str(path), "--chunk-size", "10", "--no-progress")
    assert FeatureValue.objects.count() == 20


def test_unknown_view_missing_file_and_wrong_format_are_one_line(vitals, tmp_path):
    with pytest.raises(CommandError, match="no feature view named 'nope'"):
        call_command("ingest_features", "nope", str(tmp_path / "x.csv"))
    with pytest.raises(CommandError, match="no such file"):
        call_command("ingest_features", "vitals", str(tmp_path / "x.csv"), "--no-progress")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(CommandError, match="give a .csv or .parquet file"):
        call_command("ingest_features", "vitals", str(tmp_path / "x.json"), "--no-progress")
