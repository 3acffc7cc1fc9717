"""A row the database can never take must not hold back the others: it becomes a dead letter, the rest is written,
and the flusher keeps going. The database being away is different: rows are kept and written once it is back."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from django.db import OperationalError, connection
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from serving import prediction_log
from serving.models import DeadLetter, PredictionLog
from serving.prediction_log import LogEntry, PredictionLogBuffer, entry_bytes

ROW29 = {f"f{i}": 0.5 for i in range(29)}
# The three poison inputs (the exposure one is in tests/experiments/test_exposure_dead_letters.py), and more
# rows Postgres refuses for their content: a NUL inside jsonb text, a version out of integer range, a negative
# version (check constraint), a request id longer than its column.
POISONS = {
    "integer above 2^64 in the inputs": {"inputs": [{"f29": 1180591620717411303424, **ROW29}]},
    "lone surrogate in the routing key": {"routing_key": "\ud800"},
    "NUL in a jsonb string": {"inputs": [{"colour": "red\x00", **ROW29}]},
    "lone surrogate in the inputs": {"inputs": [{"colour": "\udfff", **ROW29}]},
    "version out of integer range": {"version": 2**40},
    "negative version": {"version": -1},
    "request id too long": {"request_id": "x" * 65},
}


def flushed_by_hand(**kwargs) -> PredictionLogBuffer:
    """A buffer whose background thread never starts: the test flushes on its own connection."""
    buffer = PredictionLogBuffer(flush_seconds=3600, max_rows=kwargs.pop("max_rows", 10_000), **kwargs)
    buffer._ensure_thread = lambda: None
    return buffer


def entry(rid: str, **changes) -> LogEntry:
    good = LogEntry(rid, "cancer", 1, "user-1", [{"f29": 1.0, **ROW29}], {"predictions": [1]}, 1.5, False,
                    "alias:production", "ok", timezone.now())  # fmt: skip
    return good._replace(**changes)


def dead_letters(source: str = "prediction_log") -> float:
    return REGISTRY.get_sample_value("modelworks_log_dead_letters_total", {"source": source}) or 0.0


def logged_ids(prefix: str = "") -> set[str]:
    return set(PredictionLog.objects.filter(request_id__startswith=prefix).values_list("request_id", flat=True))


@pytest.mark.django_db
@pytest.mark.parametrize("poison", list(POISONS.values()), ids=list(POISONS))
def test_a_poison_row_amid_good_rows_is_a_dead_letter_and_every_good_row_is_written(poison):
    buffer = flushed_by_hand(batch_rows=1000)
    before = dead_letters()
    for i in range(200):
        buffer.append(entry(f"good-{i}") if i != 77 else entry("poison", **poison))
    assert buffer.flush() == 199
    assert logged_ids("good-") == {f"good-{i}" for i in range(200) if i != 77}
    (letter,) = DeadLetter.objects.all()
    assert letter.source == "prediction_log" and letter.error
    payload = json.loads(letter.payload)  # the row as buffered, exactly: escapes keep NUL, surrogates, big integers
    assert {k: payload[k] for k in poison} == json.loads(json.dumps(poison))
    assert dead_letters() == before + 1 and len(buffer) == 0
    # ... and the flusher keeps going: the next rows are written on the next flush.
    buffer.append(entry("after"))
    assert buffer.flush() == 1 and logged_ids("after") == {"after"}


@pytest.mark.django_db(transaction=True)
def test_the_background_flusher_keeps_logging_after_a_poison_row():
    buffer = PredictionLogBuffer(flush_seconds=0.02, max_rows=10_000, batch_rows=50)
    try:
        buffer.append(entry("poison", **POISONS["integer above 2^64 in the inputs"]))
        for i in range(300):
            buffer.append(entry(f"good-{i}"))
        deadline = time.monotonic() + 20  # a bound on waiting for the thread, not a performance assertion
        while len(logged_ids("good-")) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(logged_ids("good-")) == 300 and len(buffer) == 0
    finally:
        buffer.close()
    assert DeadLetter.objects.filter(source="prediction_log").count() == 1


@pytest.mark.django_db(transaction=True)
def test_rows_are_kept_while_the_database_is_away_and_written_once_it_is_back(monkeypatch):
    buffer = flushed_by_hand(batch_rows=40)
    for i in range(100):
        buffer.append(entry(f"kept-{i}"))
    before = dead_letters()
    connection.close()
    port = connection.settings_dict["PORT"]
    monkeypatch.setitem(connection.settings_dict, "PORT", "1")
    assert buffer.flush() == 0 and buffer.flush() == 0  # connection refused: nothing written, nothing lost
    assert len(buffer) == 100 and dead_letters() == before
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", port)
    assert buffer.flush() == 100 and len(buffer) == 0
    assert logged_ids("kept-") == {f"kept-{i}" for i in range(100)}
    assert not DeadLetter.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_background_flusher_survives_its_connection_being_killed():
    buffer = PredictionLogBuffer(flush_seconds=0.02, max_rows=10_000, batch_rows=50)

    def wait_for(count: int) -> int:
        deadline = time.monotonic() + 20  # a bound on waiting for the thread, not a performance assertion
        while len(logged_ids("row-")) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(logged_ids("row-"))

    try:
        for i in range(100):
            buffer.append(entry(f"row-{i}"))
        assert wait_for(100) == 100
        with connection.cursor() as cursor:  # what a Postgres restart or a failover does to the flusher's session
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        for i in range(100, 200):
            buffer.append(entry(f"row-{i}"))
        assert wait_for(200) == 200
    finally:
        buffer.close()
    assert not DeadLetter.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_dead_letter_goes_to_a_file_while_the_database_is_away(monkeypatch, settings, tmp_path):
    settings.MODELWORKS_DEAD_LETTER_DIR = str(tmp_path)
    buffer = flushed_by_hand()
    buffer.append(entry("poison", **POISONS["integer above 2^64 in the inputs"]))  # refused before any connection
    buffer.append(entry("good"))
    connection.close()
    port = connection.settings_dict["PORT"]
    monkeypatch.setitem(connection.settings_dict, "PORT", "1")
    assert buffer.flush() == 0 and len(buffer) == 1  # the good row waits for the database
    (line,) = (tmp_path / "prediction_log.jsonl").read_text().splitlines()
    letter = json.loads(line)
    assert json.loads(letter["payload"])["request_id"] == "poison" and "64-bit" in letter["error"]
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", port)
    assert buffer.flush() == 1 and logged_ids() == {"good"}


def test_the_byte_cap_drops_the_oldest_and_counts_them():
    wide = entry("wide-00", inputs=[{"f29": 1.0, **ROW29}] * 100)  # one request of 100 rows
    buffer = flushed_by_hand(max_rows=1_000_000, max_bytes=10 * entry_bytes(wide))
    dropped = REGISTRY.get_sample_value("modelworks_prediction_log_dropped_total") or 0.0
    for i in range(25):
        buffer.append(wide._replace(request_id=f"wide-{i:02}"))
    assert len(buffer) == 10 and buffer.dropped == 15
    assert [e.request_id for e in buffer._rows] == [f"wide-{i:02}" for i in range(15, 25)]
    assert buffer.buffered_bytes == 10 * entry_bytes(wide)
    assert REGISTRY.get_sample_value("modelworks_prediction_log_dropped_total") == dropped + 15


def test_the_byte_estimate_grows_with_what_an_entry_holds():
    one, hundred = entry("a"), entry("a", inputs=[{"f29": 1.0, **ROW29}] * 100)
    assert 50 * entry_bytes(one) < entry_bytes(hundred)
    assert entry_bytes(entry("a", routing_key="k" * 10_000)) > entry_bytes(one) + 9_900


@pytest.mark.django_db
@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kinds=st.lists(st.sampled_from([None, *POISONS]), min_size=1, max_size=60),
    batch_rows=st.integers(1, 64),
)
def test_any_mix_of_poison_and_good_rows_writes_exactly_the_good_ones(kinds, batch_rows):
    run = uuid.uuid4().hex[:8]
    buffer = flushed_by_hand(batch_rows=batch_rows)
    letters = DeadLetter.objects.count()
    for i, kind in enumerate(kinds):
        request_id = f"{run}-{i}"
        changes = dict(POISONS[kind]) if kind is not None else {}
        if "request_id" in changes:
            changes["request_id"] = request_id + changes["request_id"]
        buffer.append(entry(request_id, **changes))
    good = {f"{run}-{i}" for i, kind in enumerate(kinds) if kind is None}
    assert buffer.flush() == len(good)
    assert logged_ids(run) == good and len(buffer) == 0
    assert DeadLetter.objects.count() - letters == len(kinds) - len(good)


@pytest.mark.django_db
def test_dead_letters_are_read_only_in_the_admin(client, staff):
    buffer = flushed_by_hand()
    buffer.append(entry("poison", routing_key="\ud800"))
    buffer.flush()
    letter = DeadLetter.objects.get()
    client.force_login(staff)
    listing = client.get("/admin/serving/deadletter/")
    assert listing.status_code == 200 and "UnicodeEncodeError" in listing.content.decode()
    assert client.get(f"/admin/serving/deadletter/{letter.pk}/change/").status_code == 200  # viewable
    assert client.get("/admin/serving/deadletter/add/").status_code == 403
    client.post(f"/admin/serving/deadletter/{letter.pk}/change/", {"error": "rewritten", "source": "x"})
    assert DeadLetter.objects.get().error == letter.error


@pytest.mark.django_db(transaction=True)
def test_a_clean_stop_while_the_database_is_away_keeps_every_row_in_the_dead_letter_file(
    monkeypatch, settings, tmp_path
):
    settings.MODELWORKS_DEAD_LETTER_DIR = str(tmp_path)
    buffer = flushed_by_hand()
    for i in range(3):
        buffer.append(entry(f"kept-{i}"))
    letters = dead_letters()
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", "1")
    buffer.close()  # as gunicorn's worker exit or SIGTERM does
    spilled = [json.loads(line) for line in (tmp_path / "prediction_log.jsonl").read_text().splitlines()]
    assert [json.loads(letter["payload"])["request_id"] for letter in spilled] == ["kept-0", "kept-1", "kept-2"]
    assert all("before shutdown" in letter["error"] for letter in spilled)
    assert len(buffer) == 0 and dead_letters() == letters + 3
    connection.close()
    monkeypatch.undo()


def test_a_clean_stop_while_the_database_hangs_ends_on_time_and_keeps_the_rest_in_the_dead_letter_file(
    monkeypatch, settings, tmp_path
):
    settings.MODELWORKS_DEAD_LETTER_DIR = str(tmp_path)
    hung, released = threading.Event(), threading.Event()

    def hanging_insert(entries):  # what a write to a stopped Postgres does: no answer, no error
        hung.set()
        released.wait(30)
        raise OperationalError("the database came back too late")

    monkeypatch.setattr(prediction_log, "insert", hanging_insert)
    buffer = PredictionLogBuffer(flush_seconds=3600, max_rows=10_000, batch_rows=2)
    try:
        for i in range(5):
            buffer.append(entry(f"kept-{i}"))
        started = time.monotonic()
        buffer.close(timeout=0.5)  # as the web worker's exit does, within its budget
        assert time.monotonic() - started < 3 and hung.is_set()
    finally:
        released.set()
    spilled = [json.loads(line) for line in (tmp_path / "prediction_log.jsonl").read_text().splitlines()]
    # The batch caught in the hung write is the one loss; every row after it is in the file.
    assert [json.loads(letter["payload"])["request_id"] for letter in spilled] == ["kept-2", "kept-3", "kept-4"]
