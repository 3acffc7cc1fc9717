"""One batching mechanism: the ASGI front's rounds (serving/front.py). Concurrent requests through the front share
model calls; through the Django view each request calls its model inline. Either way every request gets exactly
its own rows' answers, equal to unbatched calls."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from registry import services as registry
from serving import metrics
from serving.front import Pending, answer_round
from serving.hotpath import predict_steps
from serving.policies import serving_policy_set
from tests.serving.conftest import post, rows_of


def _histogram(model: str) -> tuple[float, float]:
    """(model calls, rows) recorded so far by the batch-size histogram for this model."""
    histogram = metrics.BATCH_SIZE.labels(model)
    return sum(b.get() for b in histogram._buckets), histogram._sum.get()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("trained", ["forest", "logreg"])
def test_concurrent_requests_through_the_django_view_get_exactly_their_own_answers(
    request, trained, classifier_model, key, settings
):
    settings.MODELWORKS_PREDICTION_CACHE = False
    model = request.getfixturevalue(trained)
    version = registry.model_version_register(
        model=classifier_model, artifact=model.artifact, evaluation_data=model.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=version)
    # Sixteen threads share the GIL: on a loaded machine one call's wall time can pass the default 1 s budget, which
    # would answer 503 for a reason that is not this test's subject (each request getting exactly its own answer).
    serving_policy_set(model=classifier_model, inference_budget_ms=30_000)
    rows = rows_of(model.X_test, 120)
    calls_before, rows_before = _histogram("cancer")

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
    calls_after, rows_after = _histogram("cancer")
    assert rows_after - rows_before == 120
    assert calls_after - calls_before == 120  # the Django path batches nothing: one inline call per request
    assert not [t.name for t in threading.enumerate() if t.name.startswith("batcher-")]  # no per-version thread


@pytest.mark.django_db
def test_one_round_makes_one_model_call_per_version_and_answers_each_request_with_its_own_version(
    classifier_model, forest, logreg, settings
):
    """A round holding requests for two versions (production, and a pin of the other): one model call each, and
    every request answered by the version it asked for, with its own rows."""
    settings.MODELWORKS_PREDICTION_CACHE = False
    v1 = registry.model_version_register(model=classifier_model, artifact=forest.artifact,
                                         evaluation_data=forest.eval_csv)  # fmt: skip
    registry.model_version_register(model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)
    registry.alias_create(model=classifier_model, name="production", version=v1)
    rows = rows_of(logreg.X_test, 20)
    pending = [
        Pending(predict_steps("cancer", json.dumps({"instances": [row]}).encode(),
                              version="2" if i % 2 else None, alias=None, request_id=f"round-{i}"))
        for i, row in enumerate(rows)
    ]  # fmt: skip
    calls_before, rows_before = _histogram("cancer")
    answer_round(pending, max_rows=64)
    calls_after, rows_after = _histogram("cancer")
    assert (calls_after - calls_before, rows_after - rows_before) == (2, 20)
    for i, item in enumerate(pending):
        assert item.reply.status == 200, item.reply.payload
        answer = item.reply.payload
        expected = logreg if i % 2 else forest
        assert answer["version"] == (2 if i % 2 else 1) and answer["request_id"] == f"round-{i}"
        alone = expected.estimator.predict_proba(logreg.X_test.iloc[i : i + 1])
        assert np.allclose(answer["probabilities"], alone, rtol=0, atol=1e-15)


@pytest.mark.django_db
def test_a_round_is_cut_into_calls_of_at_most_max_rows(production, logreg, settings):
    settings.MODELWORKS_PREDICTION_CACHE = False
    rows = rows_of(logreg.X_test, 10)
    pending = [Pending(predict_steps("cancer", json.dumps({"instances": rows[i : i + 2]}).encode(), version=None,
                                     alias=None, request_id=None)) for i in range(0, 10, 2)]  # fmt: skip
    calls_before, _ = _histogram("cancer")
    answer_round(pending, max_rows=4)
    calls_after, _ = _histogram("cancer")
    assert calls_after - calls_before == 3  # 2+2 | 2+2 | 2 rows
    assert [len(item.reply.payload["predictions"]) for item in pending] == [2] * 5
    assert [p for item in pending for p in item.reply.payload["predictions"]] == logreg.estimator.predict(
        logreg.X_test.head(10)
    ).tolist()
