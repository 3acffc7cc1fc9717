"""Batch planning without workers: CSV byte ranges cover every row once with the right row numbers (any file, any
chunk size), Parquet chunks follow row groups, vectorised validation agrees with the request path's, and schedules
start one job per cron time over their dated paths."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry import services as registry
from serving import batch, batch_io
from serving.batch_models import BatchJob, BatchSchedule
from serving.validation import FLOAT32_MAX, FLOAT64_MAX, check_value


@pytest.fixture
def roots(settings, tmp_path):
    settings.MODELWORKS_BATCH_LOCAL_ROOTS = [str(tmp_path)]
    return tmp_path


cells = st.text(alphabet="abc 019.-", max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(cells, cells), max_size=40), chunk_rows=st.integers(1, 12),
       final_newline=st.booleans(), crlf=st.booleans())  # fmt: skip
def test_csv_chunks_cover_every_row_once_with_its_row_number(roots, rows, chunk_rows, final_newline, crlf):
    newline = "\r\n" if crlf else "\n"
    lines = ["a,b", *(f"{x},{y}" for x, y in rows)]
    text = newline.join(lines) + (newline if final_newline else "")
    path = roots / "rows.csv"
    path.write_text(text, newline="")
    columns, chunks = batch_io.plan(batch_io.locate(str(path)), "csv", chunk_rows)
    assert columns == ["a", "b"]
    assert [c["rows"] for c in chunks] == [min(chunk_rows, len(rows) - i) for i in range(0, len(rows), chunk_rows)]
    read = [batch_io.read_chunk(c) for c in chunks]
    assert [c["first_row"] for c in chunks] == list(range(0, len(rows), chunk_rows))
    assert sum(len(frame) for frame in read) == len(rows)
    got = [tuple(r) for frame in read for r in frame.itertuples(index=False)]
    assert got == [(x, y) for x, y in rows]


def test_parquet_chunks_follow_row_groups(roots):
    path = roots / "rows.parquet"
    pq.write_table(pa.table({"x": np.arange(250.0)}), path, row_group_size=50)
    _, chunks = batch_io.plan(batch_io.locate(str(path)), "parquet", 120)
    assert [(c["row_groups"], c["first_row"], c["rows"]) for c in chunks] == [([0, 1, 2], 0, 150), ([3, 4], 150, 100)]
    assert batch_io.read_chunk(chunks[1])["x"].to_pylist() == list(np.arange(150.0, 250.0))


FEATURE = {"name": "x", "dtype": "float", "min": -5, "max": 1e6}
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**7), 10**7),
    st.none(),
    st.sampled_from([3.5e38, -3.5e38, 3.4e38]),
)  # about float32's limit


@given(st.lists(values, min_size=1, max_size=30))
def test_vectorised_validation_refuses_exactly_what_a_request_would(column):
    """The column check and serving/validation.py's check_value agree on every value a Parquet float column holds."""
    frame = pd.DataFrame({"x": pd.Series([np.nan if v is None else float(v) for v in column], dtype=float)})
    # as a Parquet chunk reads: an Arrow column, nulls where the value is missing (NaN stays NaN)
    table = pa.table({"x": pa.array([None if v is None else float(v) for v in column], type=pa.float64())})
    feature = {"name": "x", "dtype": "float"}  # no bounds: the model's float limit decides
    for checked, limit in ((FEATURE, FLOAT64_MAX), (feature, FLOAT64_MAX), (feature, FLOAT32_MAX)):
        _, fields, reasons, good = batch.checked_columns(frame, [checked], float_limit=limit)
        _, arrow_fields, arrow_reasons, arrow_good = batch.checked_columns(table, [checked], float_limit=limit)
        assert list(arrow_reasons) == list(reasons) and list(arrow_fields) == list(fields)
        assert list(good) == list(arrow_good) == [r is None for r in reasons]
        for value, reason in zip(frame["x"], reasons, strict=True):
            expected = check_value(checked, None if np.isnan(value) else float(value), limit)
            assert (reason is None) == (expected is None), (value, limit, reason, expected)


INT_FEATURE = {"name": "n", "dtype": "int", "min": 0, "max": 100, "allowed": [1, 2, 3, 50]}


@given(st.lists(st.one_of(st.none(), st.integers(-10, 200)), min_size=1, max_size=30), st.booleans())
def test_an_arrow_integer_column_is_checked_as_its_pandas_reading_is(column, nullable):
    """Parquet integer columns (with or without nulls) take the Arrow path: the same reasons, row by row."""
    feature = {**INT_FEATURE, "nullable": nullable}
    table = pa.table({"n": pa.array(column, type=pa.int64())})
    _, fields, reasons, good = batch.checked_columns(table.to_pandas(), [feature], float_limit=FLOAT64_MAX)
    _, arrow_fields, arrow_reasons, arrow_good = batch.checked_columns(table, [feature], float_limit=FLOAT64_MAX)
    assert list(arrow_reasons) == list(reasons) and list(arrow_fields) == list(fields)
    assert list(good) == list(arrow_good) == [r is None for r in reasons]


@pytest.mark.django_db
def test_a_schedule_starts_one_job_per_cron_time_over_its_dated_paths(roots, classifier_model, logreg):
    version = registry.model_version_register(model=classifier_model, artifact=logreg.artifact,
                                              evaluation_data=logreg.eval_csv)  # fmt: skip
    registry.alias_create(model=classifier_model, name="production", version=version)
    (roots / "in" / "2026-12-04").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1.0]}), roots / "in" / "2026-12-04" / "a.parquet")
    BatchSchedule.objects.create(
        name="nightly", model=classifier_model, cron="0 3 * * *", input_pattern=f"{roots}/in/%Y-%m-%d/",
        output_pattern=f"{roots}/out/%Y-%m-%d/",
    )  # fmt: skip
    assert batch.batch_schedules_run_due(now=datetime(2026, 12, 4, 3, 0, 20, tzinfo=UTC)) == 1
    assert batch.batch_schedules_run_due(now=datetime(2026, 12, 4, 9, 0, tzinfo=UTC)) == 0  # the same 03:00
    (job,) = BatchJob.objects.all()
    assert (job.input_uri, job.output_uri) == (f"{roots}/in/2026-12-04/", f"{roots}/out/2026-12-04/")
    assert job.version == version and job.schedule.name == "nightly"
    schedule = BatchSchedule.objects.get()
    assert schedule.last_fired_at == datetime(2026, 12, 4, 3, 0, tzinfo=UTC)
    # the next day's input is missing: no job, logged, and the schedule does not fire for that day again
    assert batch.batch_schedules_run_due(now=datetime(2026, 12, 5, 3, 1, tzinfo=UTC)) == 0
    assert BatchJob.objects.count() == 1


def test_cron_specs_are_checked():
    assert batch.cron_problem("0 3 * * *") is None
    assert "five fields" in batch.cron_problem("0 3 * *")
    assert batch.cron_problem("99 3 * * *") is not None


@pytest.mark.django_db
def test_the_console_starts_a_job_from_the_model_page_and_lists_its_progress(client, staff, roots, classifier_model,
                                                                              logreg):  # fmt: skip
    version = registry.model_version_register(model=classifier_model, artifact=logreg.artifact,
                                              evaluation_data=logreg.eval_csv)  # fmt: skip
    registry.alias_create(model=classifier_model, name="production", version=version)
    pq.write_table(pa.table({"x": [1.0]}), roots / "a.parquet")
    client.force_login(staff)
    page = client.get(f"/admin/models/{classifier_model.name}/")
    start = f"/admin/serving/batchjob/add/?model={classifier_model.pk}"
    assert start in page.content.decode() and "No batch jobs." in page.content.decode()
    form = {"model": classifier_model.pk, "version_ref": "", "input_uri": "/etc/passwd", "input_format": "",
            "output_uri": f"{roots}/out", "passthrough": "", "chunk_rows": "", "parallelism": ""}  # fmt: skip
    refused = client.post(start, form).content.decode()
    assert "outside the local batch roots" in refused and not BatchJob.objects.exists()
    client.post(start, {**form, "input_uri": f"{roots}/a.parquet", "passthrough": "x"})
    (job,) = BatchJob.objects.all()
    assert (job.input_uri, job.passthrough, job.version) == (f"{roots}/a.parquet", ["x"], version)
    listed = client.get("/admin/serving/batchjob/").content.decode()
    assert "planning" in listed and "v1" in listed
    assert client.get(f"/admin/serving/batchjob/{job.pk}/change/").status_code == 200


@pytest.mark.django_db
def test_score_batch_starts_a_job_cancels_it_and_refuses_in_one_line(roots, classifier_model, logreg, capsys):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    version = registry.model_version_register(model=classifier_model, artifact=logreg.artifact,
                                              evaluation_data=logreg.eval_csv)  # fmt: skip
    pq.write_table(pa.table({"x": [1.0]}), roots / "a.parquet")
    call_command("score_batch", "models:/cancer/1", str(roots / "a.parquet"), str(roots / "out"), "--no-wait")
    (job,) = BatchJob.objects.all()
    assert capsys.readouterr().out.strip() == str(job.pk) and job.version == version
    call_command("score_batch", "--cancel", str(job.pk))
    job.refresh_from_db()
    assert job.status == "cancelled"
    with pytest.raises(CommandError, match="^version: cancer has no production alias"):
        call_command("score_batch", "cancer", str(roots / "a.parquet"), str(roots / "out2"), "--no-wait")
    with pytest.raises(CommandError, match="already cancelled"):
        call_command("score_batch", "--cancel", str(job.pk))
