"""The feature store's bulk work from the admin: ingest a file into a view (bad rows named), materialize it, and
build point-in-time training data from an uploaded entity CSV, downloaded as CSV; all through features' services."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from features.models import FeatureValue, MaterializationJob, MaterializationRun
from features.services import materialization_job_run

pytestmark = pytest.mark.django_db
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def _csv(rows: list[dict]) -> SimpleUploadedFile:
    return SimpleUploadedFile("vitals.csv", pd.DataFrame(rows).to_csv(index=False).encode())


def test_a_file_with_a_bad_row_is_refused_with_the_row_named_then_ingested_and_materialized(
    admin_client, vitals, settings
):
    settings.MODELWORKS_FEATURES_MATERIALIZE_LAG_S = 0  # values written a moment ago are materialized at once
    url = reverse("admin:features_featureview_ingest", args=[vitals.pk])
    good = [{"patient_id": i, "event_timestamp": (T0 + timedelta(minutes=i)).isoformat(), "heart_rate": 60 + i}
            for i in range(3)]  # fmt: skip
    bad = [*good, {"patient_id": 9, "event_timestamp": T0.isoformat(), "heart_rate": "fast"}]
    refused = admin_client.post(url, {"file": _csv(bad)}).content.decode()
    assert "Stopped at a chunk with bad rows" in refused and "row 4" in refused and "heart_rate" in refused
    assert FeatureValue.objects.filter(view=vitals).count() == 0  # the chunk holding the bad row: nothing stored

    stored = admin_client.post(url, {"file": _csv(good)}).content.decode()
    assert "3 rows stored" in stored
    page = admin_client.get(reverse("admin:features_featureview_change", args=[vitals.pk])).content.decode()
    assert "vitals.csv" in page and "stopped or running" in page and "finished" in page  # both jobs, with state
    assert FeatureValue.objects.filter(view=vitals).count() == 3

    # "Materialize now" queues the work for a worker and follows it on its own page; here the job is run as the
    # worker runs it (tests/features/test_materialize.py does it with a real worker process).
    queued = admin_client.post(reverse("admin:features_featureview_materialize", args=[vitals.pk]))
    job = MaterializationJob.objects.get(view=vitals)
    assert queued["Location"] == reverse("admin:features_featureview_materialization", args=[vitals.pk, job.pk])
    assert "Waiting for a worker" in admin_client.get(queued["Location"]).content.decode()
    materialization_job_run(job=job)
    page = admin_client.get(queued["Location"]).content.decode()
    run = MaterializationRun.objects.get(view=vitals)
    assert run.rows_written == 3
    assert f"Done: {run.rows_read} values read, <strong>3 written to the online store</strong>" in page
    assert "data-live" not in page  # finished: the page stops following it


def test_training_data_is_built_point_in_time_and_downloaded(admin_client, vitals):
    ingest = reverse("admin:features_featureview_ingest", args=[vitals.pk])
    values = [(1, T0, 70.0), (1, T0 + timedelta(minutes=10), 80.0), (2, T0 + timedelta(minutes=5), 90.0)]
    rows = [{"patient_id": k, "event_timestamp": t.isoformat(), "heart_rate": v} for k, t, v in values]
    admin_client.post(ingest, {"file": _csv(rows)})
    entities = pd.DataFrame({
        "patient_id": [1, 1, 2, 2],
        "event_timestamp": [(T0 + timedelta(minutes=m)).isoformat() for m in (5, 15, 1, 200)],
    })  # fmt: skip
    # The oracle: per row, the newest value at or before its time and within the view's 1 h TTL.
    expected = []
    for key, at in zip(entities.patient_id, pd.to_datetime(entities.event_timestamp), strict=True):
        known = [(t, v) for k, t, v in values if k == key and at - timedelta(hours=1) <= t <= at]
        expected.append(max(known)[1] if known else None)

    answer = admin_client.post(
        reverse("admin:features_featureview_training_data"),
        {"entities": SimpleUploadedFile("e.csv", entities.to_csv(index=False).encode()),
         "features": ["vitals:heart_rate"], "timestamp_column": "event_timestamp"},
    )  # fmt: skip
    assert answer.status_code == 200 and answer["Content-Disposition"].startswith('attachment; filename="training-data')
    result = pd.read_csv(io.BytesIO(answer.content))
    assert list(result.columns) == ["patient_id", "event_timestamp", "vitals:heart_rate"]
    got = [None if pd.isna(v) else v for v in result["vitals:heart_rate"]]
    assert got == expected == [70.0, 80.0, None, None]


def test_training_data_without_the_join_key_says_so(admin_client, vitals):
    answer = admin_client.post(
        reverse("admin:features_featureview_training_data"),
        {"entities": SimpleUploadedFile("e.csv", b"id,event_timestamp\n1,2026-01-01T00:00:00Z\n"),
         "features": ["vitals:heart_rate"], "timestamp_column": "event_timestamp"},
    )  # fmt: skip
    assert "missing column(s): patient_id" in answer.content.decode()
