"""Micro-batching: concurrent single-row requests share model calls, and answers equal unbatched calls."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from registry import services as registry
from serving import metrics
from serving.batching import MicroBatcher
from tests.serving.conftest import post, rows_of


def test_concurrent_jobs_are_grouped_and_each_gets_its_own_rows():
    sizes: list[int] = []
    release = threading.Event()

    def predict(rows):
        release.wait(5)  # hold the first call so the others queue up behind it
        sizes.append(len(rows))
        return [r[0] * 10 for r in rows], [[float(r[0])] for r in rows]

    batcher = MicroBatcher(predict, max_rows=64, wait_seconds=0.002, name="unit")
    futures = []
    for i in range(40):
        batcher.announce()
        futures.append(batcher.submit([[i], [i + 100]], announced=True))
    release.set()
    results = [f.result(timeout=5) for f in futures]
    assert results == [([i * 10, (i + 100) * 10], [[float(i)], [float(i + 100)]]) for i in range(40)]
    assert sum(sizes) == 80 and max(sizes) > 2 and all(s <= 64 for s in sizes)


def test_a_lone_request_is_not_held_for_the_wait_budget():
    batcher = MicroBatcher(lambda rows: (rows, None), max_rows=64, wait_seconds=5.0, name="lone")
    batcher.announce()
    assert batcher.submit([[1]], announced=True).result(timeout=1) == ([[1]], None)


def test_a_failing_batch_fails_only_its_own_requests():
    def predict(rows):
        if any(r[0] < 0 for r in rows):
            raise ValueError("negative")
        return rows, None

    batcher = MicroBatcher(predict, max_rows=64, wait_seconds=0.001, name="fail")
    with pytest.raises(ValueError):
        batcher.submit([[-1]]).result(timeout=2)
    assert batcher.submit([[2]]).result(timeout=2) == ([[2]], None)


def test_when_a_shared_call_fails_each_request_is_retried_alone():
    """Only the request whose rows fail gets the failure; its batched neighbours get their answers."""
    release = threading.Event()
    sizes: list[int] = []

    def predict(rows):
        release.wait(5)  # hold the first call so the others queue up behind it and share the next one
        sizes.append(len(rows))
        if any(r[0] < 0 for r in rows):
            raise ValueError("negative")
        return [r[0] * 10 for r in rows], None

    batcher = MicroBatcher(predict, max_rows=64, wait_seconds=0.001, name="alone")
    futures = [batcher.submit([[value]]) for value in (0, 1, -2, 3, -4, 5)]
    release.set()
    for value, future in zip((0, 1, -2, 3, -4, 5), futures, strict=True):
        if value < 0:
            with pytest.raises(ValueError):
                future.result(timeout=5)
        else:
            assert future.result(timeout=5) == ([value * 10], None)
    assert max(sizes) > 1  # the requests did share a call, which failed, before each was called alone


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("trained", ["forest", "logreg"])
def test_served_answers_under_concurrency_equal_unbatched_calls(request, trained, classifier_model, key, settings):
    settings.MODELWORKS_PREDICTION_CACHE = False
    model = request.getfixturevalue(trained)
    version = registry.model_version_register(
        model=classifier_model, artifact=model.artifact, evaluation_data=model.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=version)
    rows = rows_of(model.X_test, 120)
    histogram = metrics.BATCH_SIZE.labels("cancer")
    before_rows, before_calls = histogram._sum.get(), sum(b.get() for b in histogram._buckets)

    def one(row):
        from django.db import connection
        from django.test import Client

        try:
            client = Client(HTTP_AUTHORIZATION=f"Api-Key {key}")
            return post(client, "/api/v1/models/cancer/predict", {"instances": [row]})
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(one, rows))
    assert all(r.status_code == 200 for r in responses)
    served_labels = [r.json()["predictions"][0] for r in responses]
    served_probs = np.array([r.json()["probabilities"][0] for r in responses])
    alone = [model.estimator.predict_proba(model.X_test.iloc[[i]])[0] for i in range(120)]
    assert served_labels == model.estimator.predict(model.X_test.head(120)).tolist()
    if trained == "forest":
        assert np.array_equal(served_probs, np.array(alone))  # bit for bit
    else:
        # A linear model's matrix product sums in a different order for a 1-row and an n-row matrix (BLAS
        # blocking), so probabilities may differ in the last bit; labels are identical.
        assert np.allclose(served_probs, np.array(alone), rtol=0, atol=1e-15)
    calls = sum(b.get() for b in histogram._buckets) - before_calls
    assert histogram._sum.get() - before_rows == 120
    if trained == "forest":  # slow enough per call that concurrent requests always queue up behind one another
        assert calls < 100, calls


def test_a_closed_batcher_answers_what_was_queued_then_stops():
    batcher = MicroBatcher(lambda rows: (rows, None), max_rows=64, wait_seconds=0.001, name="closing")
    pending = batcher.submit([[7]])
    batcher.close()
    assert pending.result(timeout=2) == ([[7]], None)
    batcher._thread.join(timeout=2)
    assert not batcher._thread.is_alive()
