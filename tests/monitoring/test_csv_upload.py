"""Feedback, events and reference samples uploaded as CSV in the console: a preview naming each row's problems,
then the rows without problems stored by the API's services and the others refused by row number and reason."""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring.api.csv_rows import UnreadableCSV, parse_rows, store_rows
from monitoring.models import BusinessEvent, Feedback, ReferenceDataset

pytestmark = pytest.mark.django_db

FEEDBACK = b"request_id,actual,time\nr-1,1,2026-12-01T10:00:00Z\nr-2,0,\n,1,\nr-4,yes,not-a-time\n"


def test_rows_are_checked_by_the_api_serializer_and_numbered_as_a_spreadsheet_shows_them():
    rows = parse_rows("feedback", FEEDBACK)
    assert [r.number for r in rows] == [2, 3, 4, 5]
    assert [bool(r.problems) for r in rows] == [False, False, True, True]
    assert "request_id: give a request_id, or a routing_key" in rows[2].problems[0]
    assert rows[3].problems[0].startswith("time: Datetime has wrong format")
    assert rows[0].item.actual == 1 and rows[1].item.time is None  # numbers read as numbers; empty = not given
    summary = store_rows("feedback", rows)
    assert summary["refused"] == [(4, rows[2].problems[0]), (5, rows[3].problems[0])]
    assert sorted(Feedback.objects.values_list("request_id", "actual")) == [("r-1", 1), ("r-2", 0)]


def test_a_file_that_cannot_be_read_says_why_in_one_line():
    with pytest.raises(UnreadableCSV, match="lacks the column"):
        parse_rows("events", b"key,value\nk,1\n")
    with pytest.raises(UnreadableCSV, match="not UTF-8"):
        parse_rows("feedback", b"\xff\xfeactual\n")
    with pytest.raises(UnreadableCSV, match="no rows"):
        parse_rows("feedback", b"request_id,actual\n")


def test_events_upload_previews_then_stores_through_the_admin(admin_client):
    url = reverse("admin:monitoring_businessevent_upload")
    csv = b"key,name,value,event_id\nc-1,purchase,10,e1\nc-2,purchase,nan,e2\nc-3,purchase,,e1\n"
    preview = admin_client.post(url, {"file": SimpleUploadedFile("events.csv", csv)})
    text = preview.content.decode()
    assert "3 rows" in text and "1 with problems" in text and "value: A valid number is required." in text
    assert BusinessEvent.objects.count() == 0  # the preview stores nothing
    token = re.search(r'name="token" value="([0-9a-f]+)"', text).group(1)
    stored = admin_client.post(url, {"token": token}).content.decode()
    assert "1 of 3 rows stored, 1 duplicate(s)" in stored
    assert "row 3" in stored and "A valid number is required" in stored
    assert list(BusinessEvent.objects.values_list("event_id", flat=True)) == ["e1"]
    assert "no longer waiting" in admin_client.post(url, {"token": token}).content.decode()  # not stored twice


def test_a_reference_sample_the_model_cannot_use_is_refused_with_the_services_reason(admin_client, cancer_v1):
    version = cancer_v1
    url = reverse("admin:monitoring_referencedataset_upload")
    preview = admin_client.post(url, {"version": version.pk, "file": SimpleUploadedFile("r.csv", b"a,b\n1,2\n")})
    token = re.search(r'name="token" value="([0-9a-f]+)"', preview.content.decode()).group(1)
    stored = admin_client.post(url, {"token": token}).content.decode()
    assert "Nothing was stored: the sample lacks the features" in stored


def test_a_reference_sample_is_stored_for_the_chosen_version(admin_client, cancer_v1, logreg):
    url = reverse("admin:monitoring_referencedataset_upload")
    sample = logreg.X_test.head(40).to_csv(index=False).encode()
    preview = admin_client.post(url, {"version": cancer_v1.pk, "file": SimpleUploadedFile("r.csv", sample)})
    text = preview.content.decode()
    assert "40 rows" in text and f"checked against {cancer_v1}" in text
    token = re.search(r'name="token" value="([0-9a-f]+)"', text).group(1)
    stored = admin_client.post(url, {"token": token}).content.decode()
    assert f"40 rows ({logreg.X_test.shape[1] + 1} columns) as the reference of {cancer_v1}" in stored
    dataset = ReferenceDataset.objects.get(version=cancer_v1)
    assert dataset.source == "upload" and dataset.rows == 40


CELLS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["NaN", "Infinity", "-1e999", "1" * 5000, "[1, 0]", "[]", "{}", "true", "\x00", "2026-13-01"]),
)


@pytest.mark.parametrize("kind", ["feedback", "events"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries({}, optional=dict.fromkeys(
    ["request_id", "routing_key", "model", "time", "actual", "key", "name", "value", "event_id", "extra"], CELLS,
)), min_size=1, max_size=6))  # fmt: skip
def test_any_csv_is_stored_or_refused_by_row_never_a_server_error(kind, rows):
    buffer = io.StringIO()
    columns = ["actual", "key", "name", *sorted({c for r in rows for c in r} - {"actual", "key", "name"})]
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    try:
        parsed = parse_rows(kind, buffer.getvalue().encode("utf-8", "surrogatepass"))
    except UnreadableCSV as exc:
        assert str(exc)
        return
    with transaction.atomic():  # each example's rows are stored and rolled back
        summary = store_rows(kind, parsed)
        transaction.set_rollback(True)
    numbers = [r.number for r in parsed]
    assert numbers == list(range(2, 2 + len(parsed)))
    assert {n for n, _ in summary["refused"]} == {r.number for r in parsed if r.problems}
    assert all(reason for _, reason in summary["refused"])


def test_values_postgres_cannot_store_are_refused_by_row_not_a_server_error():
    rows = parse_rows("feedback", b"request_id,actual\nr-1,a\x00b\nr-2,NaN\n")
    assert rows[0].problems == ["actual: cannot be stored: the value holds a NUL character (\\u0000)"]
    assert rows[1].item.actual == "NaN"  # text, as JSON has no NaN (jsonb would refuse the number)
    summary = store_rows("feedback", rows)
    assert summary["refused"] == [(2, rows[0].problems[0])]
    assert Feedback.objects.get().actual == "NaN"


def test_an_upload_larger_than_the_apis_body_bound_is_refused_in_words(admin_client, settings):
    settings.MODELWORKS_MAX_BODY_MB = 1
    big = b"request_id,actual\n" + b"r,1\n" * 300_000
    answer = admin_client.post(
        reverse("admin:monitoring_feedback_upload"), {"file": SimpleUploadedFile("big.csv", big)}
    ).content.decode()
    assert "at most 1 MB per upload (1.1 MB given)" in answer
