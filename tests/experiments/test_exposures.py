"""First exposures: recorded off the request path, once per key, surviving a failed flush and concurrency."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from django.test import Client

from experiments import exposures, services
from experiments.models import Exposure
from serving import traffic
from tests.serving.conftest import make_key, post, rows_of


def arm(name: str) -> traffic.Arm:
    return traffic.Arm(name, 1, ((0, 10_000),))


@pytest.mark.django_db
def test_a_key_is_recorded_once_with_the_arm_and_time_of_its_first_exposure(experiment, fresh_exposures):
    fresh_exposures.record(experiment.pk, arm("control"), "alice")
    first = fresh_exposures._pending[(experiment.pk, "alice")][1]
    fresh_exposures.record(experiment.pk, arm("forest"), "alice")  # a later request, another arm: ignored
    fresh_exposures.record(experiment.pk, arm("forest"), None)  # keyless: not an exposure of a key
    assert len(fresh_exposures) == 1 and fresh_exposures.flush() == 1
    stored = Exposure.objects.get(experiment=experiment)
    assert (stored.key, stored.arm, stored.first_seen_at) == ("alice", "control", first)


@pytest.mark.django_db
def test_another_process_that_saw_the_key_first_keeps_its_row(experiment, fresh_exposures):
    other_process = exposures.ExposureBuffer(flush_seconds=3600, max_rows=10)
    other_process.record(experiment.pk, arm("control"), "bob")
    other_process.flush()
    fresh_exposures.record(experiment.pk, arm("forest"), "bob")
    fresh_exposures.flush()  # ON CONFLICT DO NOTHING: no error, no second row
    assert list(Exposure.objects.values_list("key", "arm")) == [("bob", "control")]


@pytest.mark.django_db(transaction=True)
def test_rows_survive_a_failed_flush_and_are_written_on_the_next(experiment, fresh_exposures, monkeypatch):
    original = exposures.insert

    def database_down(batch):
        raise ConnectionError("database is away")

    fresh_exposures.record(experiment.pk, arm("control"), "carol")
    monkeypatch.setattr(exposures, "insert", database_down)
    assert fresh_exposures.flush() == 0 and len(fresh_exposures) == 1
    fresh_exposures.record(experiment.pk, arm("control"), "dave")
    monkeypatch.setattr(exposures, "insert", original)
    assert fresh_exposures.flush() == 2
    assert sorted(Exposure.objects.values_list("key", flat=True)) == ["carol", "dave"]


@pytest.mark.django_db
def test_recording_never_raises_and_a_full_buffer_drops_new_keys_for_later(experiment):
    buffer = exposures.ExposureBuffer(flush_seconds=3600, max_rows=2)
    for key in ("a", "b", "c"):
        buffer.record(experiment.pk, arm("control"), key)
    assert len(buffer) == 2 and buffer.dropped == 1
    buffer.flush()
    buffer.record(experiment.pk, arm("control"), "c")  # not remembered as seen: recorded on its next request
    assert len(buffer) == 1
    buffer.record(experiment.pk, None, "d")  # a broken arm is logged, not raised
    buffer.flush()
    assert sorted(Exposure.objects.values_list("key", flat=True)) == ["a", "b", "c"]


@pytest.mark.django_db(transaction=True)
def test_the_background_thread_writes_exposures_of_concurrent_requests(experiment, logreg, monkeypatch):
    buffer = exposures.ExposureBuffer(flush_seconds=0.05, max_rows=10_000)
    monkeypatch.setattr(exposures.exposure_buffer, "_value", buffer)
    services.experiment_start(experiment=experiment)

    headers = {"HTTP_AUTHORIZATION": f"Api-Key {make_key('predict:cancer')}"}
    row = rows_of(logreg.X_test, 1)
    failures = []

    def client_thread(n: int) -> None:
        client = Client(**headers)
        for i in range(15):
            response = post(client, "/api/v1/models/cancer/predict", {"instances": row, "key": f"t{n}-{i % 10}"})
            if response.status_code != 200:
                failures.append(response.content)
        connection.close()

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    deadline = time.monotonic() + 10
    while Exposure.objects.count() < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    split = traffic.active_split(experiment.model_id)
    stored = dict(Exposure.objects.values_list("key", "arm"))
    assert stored == {f"t{n}-{i}": split.arm_for(f"t{n}-{i}").name for n in range(4) for i in range(10)}
    buffer.close()
