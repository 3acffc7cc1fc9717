"""Moving an alias under load: every process follows within a second, and no request in flight fails."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from django.test import Client

from registry import services as registry
from registry.models import RegisteredModel
from tests.serving.conftest import post, rows_of


@pytest.mark.django_db(transaction=True)
def test_alias_move_under_load_switches_within_a_second_without_errors(classifier_model, logreg, forest, key):
    v1 = registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=v1)
    v2 = registry.model_version_register(
        model=classifier_model, artifact=forest.artifact, evaluation_data=forest.eval_csv
    )
    rows = rows_of(logreg.X_test, 40)
    results: list[tuple[float, int, int]] = []  # (request start, status, version)
    stop = threading.Event()

    def load(offset: int) -> None:
        client = Client(HTTP_AUTHORIZATION=f"Api-Key {key}")
        i = offset
        try:
            while not stop.is_set():
                started = time.monotonic()
                response = post(client, "/api/v1/models/cancer/predict", {"instances": [rows[i % len(rows)]]})
                version = response.json().get("version", -1) if response.status_code == 200 else -1
                results.append((started, response.status_code, version))
                i += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=load, args=(n * 7,)) for n in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.7)
    moving_at = time.monotonic()
    registry.alias_move(model=RegisteredModel.objects.get(pk=classifier_model.pk), name="production", version=v2)
    moved_at = time.monotonic()  # committed (the move re-hashes v2's artifact first): the second counts from here
    time.sleep(1.8)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)

    assert len(results) > 100
    assert all(status == 200 for _, status, _ in results), {s for _, s, _ in results}
    assert {v for started, _, v in results if started < moving_at} == {1}
    assert {v for started, _, v in results if started > moved_at + 1.0} == {2}
