"""While the database is away dead letters go to a JSON-lines file per source; that file stops growing at
MODELWORKS_DEAD_LETTER_FILE_MAX_MB, and what does not fit is dropped and counted, so an outage full of refused rows
cannot fill the disk."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from prometheus_client import REGISTRY

from serving.background import store_dead_letters


def dropped(source: str) -> float:
    return REGISTRY.get_sample_value("modelworks_log_dead_letters_dropped_total", {"source": source}) or 0.0


def dead_letters(source: str) -> float:
    return REGISTRY.get_sample_value("modelworks_log_dead_letters_total", {"source": source}) or 0.0


@pytest.fixture
def database_away(monkeypatch):
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", "1")
    yield
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_the_dead_letter_file_stops_at_its_cap_and_counts_what_it_drops(settings, tmp_path, database_away):
    settings.MODELWORKS_DEAD_LETTER_DIR = str(tmp_path)
    settings.MODELWORKS_DEAD_LETTER_FILE_MAX_MB = 0.01  # 10,485 bytes
    path = tmp_path / "prediction_log.jsonl"
    row = {"request_id": "r", "inputs": [{"colour": "x" * 900}]}  # about 1 KB a line
    before_dropped, before_letters = dropped("prediction_log"), dead_letters("prediction_log")
    for batch in range(5):
        store_dead_letters("prediction_log", [({**row, "request_id": f"{batch}-{i}"}, "refused") for i in range(5)])
    kept = [json.loads(json.loads(line)["payload"])["request_id"] for line in path.read_text().splitlines()]
    assert path.stat().st_size <= 0.01 * 1024 * 1024
    assert 5 <= len(kept) < 25 and kept == [f"{b}-{i}" for b in range(5) for i in range(5)][: len(kept)]  # oldest
    assert dropped("prediction_log") == before_dropped + 25 - len(kept)
    assert dead_letters("prediction_log") == before_letters + 25  # every refused row is still counted (and alerted)
    before_dropped = dropped("exposures")
    store_dead_letters("exposures", [({"key": "k"}, "refused")])  # each source has its own file and cap
    assert (tmp_path / "exposures.jsonl").read_text().count("\n") == 1 and dropped("exposures") == before_dropped
