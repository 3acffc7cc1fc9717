"""The ASGI front (serving/front.py), driven in-process through config.asgi's application: prediction requests with a
credential are answered in rounds by the real request-processor thread, everything else by Django's WSGI app."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from config.asgi import application
from registry import services as registry
from serving import metrics
from serving.front import Pending, answer_round, request_processor
from serving.hotpath import Reply
from serving.keys import api_key_revoke
from serving.models import ApiKey, ServingPolicy
from serving.prediction_log import prediction_log
from tests.serving.conftest import make_key, post, rows_of

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/models/cancer/predict"


@pytest.fixture(autouse=True)
def processor_lets_go_of_the_database():
    yield
    request_processor().close_connections()  # or the test database cannot be dropped at the end


async def _call(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, query: str = ""):
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 40000), "server": ("testserver", 80),
    }  # fmt: skip
    incoming = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if incoming:
            return incoming.pop()
        await asyncio.sleep(3600)  # no disconnect while the app answers

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    start = sent[0]
    content = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, content


def call(*args, **kwargs):
    return asyncio.run(_call(*args, **kwargs))


def call_all(requests: list[tuple]) -> list[tuple]:
    async def together():
        return await asyncio.gather(*(_call(*r) for r in requests))

    return asyncio.run(together())


def predict_body(rows) -> bytes:
    return json.dumps({"instances": rows}).encode()


def test_a_prediction_through_the_front_equals_the_django_views(production, key, caller, logreg):
    rows = rows_of(logreg.X_test, 3)
    headers = {"Authorization": f"Api-Key {key}", "X-Request-ID": "front-1"}
    status, answer_headers, content = call("POST", URL, predict_body(rows), headers)
    assert status == 200, content
    assert answer_headers["content-type"] == "application/json"
    assert answer_headers["x-request-id"] == "front-1" and int(answer_headers["content-length"]) == len(content)
    front = json.loads(content)
    django = post(caller, URL, {"instances": rows}).json()
    for field in ("model", "version", "predictions", "classes", "route"):
        assert front[field] == django[field]
    np.testing.assert_allclose(front["probabilities"], django["probabilities"], rtol=1e-12)
    assert front["request_id"] == "front-1"


def test_concurrent_requests_share_model_calls_and_each_gets_exactly_its_own_answer(
    classifier_model, forest, logreg, key
):
    version = registry.model_version_register(
        model=classifier_model, artifact=forest.artifact, evaluation_data=forest.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=version)
    rows = rows_of(logreg.X_test, 48)
    calls_before, rows_before = _histogram("cancer")
    headers = {"Authorization": f"Api-Key {key}"}
    answers = call_all([("POST", URL, predict_body([row]), {**headers, "X-Request-ID": f"r{i}"}) for i, row in
                        enumerate(rows)])  # fmt: skip
    assert [status for status, _, _ in answers] == [200] * 48
    for i, (_, _, content) in enumerate(answers):
        answer = json.loads(content)
        alone = forest.estimator.predict_proba(logreg.X_test.iloc[i : i + 1].to_numpy())
        assert answer["request_id"] == f"r{i}"
        assert answer["probabilities"] == alone.tolist()  # bit-identical to an unbatched call of this row
    calls_after, rows_after = _histogram("cancer")
    assert rows_after - rows_before == 48
    assert calls_after - calls_before < 48  # rows of different requests shared model calls
    logged = {entry.request_id for entry in list(prediction_log()._rows)}
    assert {f"r{i}" for i in range(48)} <= logged


def _histogram(model: str) -> tuple[float, float]:
    """(model calls, rows) recorded so far by the batch-size histogram for this model."""
    found = {}
    for metric in metrics.BATCH_SIZE.collect():
        for sample in metric.samples:
            if sample.labels.get("model") == model and sample.name.endswith(("_count", "_sum")):
                found[sample.name.rsplit("_", 1)[1]] = sample.value
    return found.get("count", 0.0), found.get("sum", 0.0)


def test_credentials_are_checked_before_anything_is_served(production, key, logreg):
    body = predict_body(rows_of(logreg.X_test, 1))
    status, headers, _ = call("POST", URL, body)  # no credential: Django's view answers
    assert status == 401 and headers["www-authenticate"] == "Api-Key"
    assert call("POST", URL, body, {"Authorization": "Api-Key mw_not-a-key"})[0] == 401
    other = make_key("predict:someone-else")
    status, _, content = call("POST", URL, body, {"X-Api-Key": other})
    assert status == 403 and "predict:cancer" in json.loads(content)["detail"]
    assert call("POST", URL, body, {"Authorization": f"Api-Key {key}"})[0] == 200
    api_key_revoke(key=ApiKey.objects.get(name="test", scopes=["predict:cancer"]))
    assert call("POST", URL, body, {"Authorization": f"Api-Key {key}"})[0] == 401  # at once


def test_bad_requests_get_a_readable_400_or_413(production, key, logreg, settings):
    headers = {"Authorization": f"Api-Key {key}"}
    status, _, content = call("POST", URL, b"{not json", headers)
    assert status == 400 and "not valid JSON" in json.loads(content)["detail"]
    row = rows_of(logreg.X_test, 1)[0] | {"colour": 3.0}
    status, _, content = call("POST", URL, predict_body([row]), headers)
    assert status == 400 and json.loads(content)["errors"][0]["field"] == "colour"
    assert call("POST", URL, predict_body([row]), headers, "version=abc")[0] == 400
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    status, _, content = call("POST", URL, b" " * 101, headers)
    assert status == 413 and "over the limit of 100 bytes" in json.loads(content)["detail"]
    status, _, content = call("POST", URL, b" " * 101, headers | {"Content-Length": "101"})
    assert status == 413 and "101 bytes; the limit is 100" in json.loads(content)["detail"]


def test_v2_infer_through_the_front(production, key, logreg):
    row = logreg.X_test.iloc[0].to_numpy(dtype=float)
    body = {"inputs": [{"name": "features", "shape": [1, len(row)], "datatype": "FP64", "data": row.tolist()}]}
    status, _, content = call("POST", "/v2/models/cancer/infer", json.dumps(body).encode(),
                              {"Authorization": f"Api-Key {key}"})  # fmt: skip
    assert status == 200, content
    outputs = {o["name"]: o for o in json.loads(content)["outputs"]}
    assert outputs["predict"]["data"] == logreg.estimator.predict(logreg.X_test.iloc[:1]).tolist()
    status, _, content = call("POST", "/v2/models/cancer/infer", json.dumps(body).encode(), {"X-Api-Key": "mw_x"})
    assert status == 401 and "error" in json.loads(content)  # the protocol's error shape


def test_a_failing_model_falls_back_and_its_breaker_opens_through_the_processor(classifier_model, forest, logreg, key):
    v1 = registry.model_version_register(model=classifier_model, artifact=forest.artifact,
                                         evaluation_data=forest.eval_csv)  # fmt: skip
    registry.alias_create(model=classifier_model, name="production", version=v1)
    signature = {"inputs": [{"name": c, "dtype": "float", "nullable": True} for c in logreg.X_test.columns]}
    v2 = registry.model_version_register(model=classifier_model, artifact=logreg.artifact, signature=signature,
                                         evaluation_data=logreg.eval_csv)  # fmt: skip
    registry.alias_move(model=classifier_model, name="production", version=v2)
    ServingPolicy.objects.create(model=classifier_model, breaker_consecutive_failures=2, breaker_cooldown_seconds=30)
    headers = {"Authorization": f"Api-Key {key}"}
    bad = rows_of(logreg.X_test, 1)[0] | {"mean radius": None}  # logistic regression fails on a null
    failed = call_all([("POST", URL, predict_body([bad]), headers)] * 2)
    assert [status for status, _, _ in failed] == [503, 503]  # the forest fallback refuses the null too
    assert int(failed[0][1]["retry-after"]) >= 1
    status, _, content = call("POST", URL, predict_body(rows_of(logreg.X_test, 1)), headers)
    served = json.loads(content)
    assert status == 200 and served["version"] == 1 and served["route"] == "fallback:circuit breaker open"


def test_going_over_the_inference_budget_is_a_failure(production, classifier_model, key, logreg):
    ServingPolicy.objects.create(model=classifier_model, inference_budget_ms=0, breaker_consecutive_failures=50)
    status, _, content = call("POST", URL, predict_body(rows_of(logreg.X_test, 1)), {"Authorization": f"Api-Key {key}"})
    assert status == 503 and "budget" in json.loads(content)["detail"]


def test_other_requests_are_answered_by_django(production, key):
    status, _, content = call("GET", "/healthz")
    assert status == 200 and json.loads(content)
    status, _, content = call("GET", "/api/v1/models/")
    assert status in (401, 403) and "credentials" in json.loads(content)["detail"]  # the management API (DRF)


def test_a_request_whose_steps_break_gets_a_500_and_the_round_goes_on():
    def broken():
        raise RuntimeError("bug")
        yield  # a generator

    def fine():
        return Reply(200, {"ok": True})
        yield

    requests = [Pending(broken()), Pending(fine())]
    answer_round(requests, max_rows=64)
    assert requests[0].reply.status == 500 and requests[1].reply.status == 200
