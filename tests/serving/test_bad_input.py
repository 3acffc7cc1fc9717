"""Bad input answers 4xx, never 5xx (issue 13, items 1 and 9): one table of requests that answered 500 (or 200 and then
could not be logged, or were accepted although malformed), each sent through both drivers of the prediction
endpoints: the ASGI front in-process with its real request-processor thread, and Django's views (test client)."""

from __future__ import annotations

import asyncio
import json
import struct
from urllib.parse import unquote

import pytest
from django.test import Client
from sklearn.datasets import load_breast_cancer

from serving.front import request_processor
from serving.models import PredictionLog
from serving.prediction_log import prediction_log
from tests.serving.test_front import _call

pytestmark = pytest.mark.django_db(transaction=True)

PREDICT = "/api/v1/models/cancer/predict"
INFER = "/v2/models/cancer/infer"
ROW29 = [1.0] * 29  # the other 29 of the breast-cancer model's 30 inputs
FEATURES = list(load_breast_cancer().feature_names)


@pytest.fixture(autouse=True)
def processor_lets_go_of_the_database():
    yield
    request_processor().close_connections()


def _front(key: str, method: str, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    path, _, query = url.partition("?")
    headers = {"Authorization": f"Api-Key {key}", **headers}
    # As uvicorn hands it over: the path percent-decoded, the query string raw. A time limit, because a request
    # that kills the processor thread is never answered.
    status, _, content = asyncio.run(asyncio.wait_for(_call(method, unquote(path), body, headers, query), 10))
    return status, content


def _django(key: str, method: str, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    meta = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    response = Client(HTTP_AUTHORIZATION=f"Api-Key {key}").post(url, body, content_type="application/json", **meta)
    return response.status_code, response.content


@pytest.fixture(params=["asgi-front", "django-views"])
def send(request, production, key):
    driver = _front if request.param == "asgi-front" else _django
    return lambda url, body, headers=None: driver(key, "POST", url, body, headers or {})


def _v2(*tensors: dict, **request) -> bytes:
    return json.dumps({"inputs": list(tensors), **request}).encode()


def _matrix(**changes) -> dict:
    return {"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": [1.0] * 30} | changes


def _binary(size, data: bytes, *, header_length: int | None = None) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [_matrix(data=None, parameters={"binary_data_size": size})]}).encode()
    length = len(header) if header_length is None else header_length
    return header + data, {"Inference-Header-Content-Length": str(length)}


FP64_ROW = struct.pack("<30d", *[1.0] * 30)

# (case, url, body, headers, status, the field or text the answer names)
CASES = [
    ("integer literal 10^400", PREDICT, b'{"inputs": [[1' + b"0" * 400 + b", " + json.dumps(ROW29)[1:-1].encode()
     + b"]]}", None, 400, "mean radius"),
    ("100,000 nested [", PREDICT, b"[" * 100_000, None, 400, "not valid JSON"),
    ("?version=%C2%B2", PREDICT + "?version=%C2%B2", json.dumps({"inputs": [[1.0] * 30]}).encode(), None, 400,
     "version"),
    ("?version= beyond the registry's integer", PREDICT + "?version=99999999999", b'{"inputs": [[1.0]]}', None, 400,
     "version"),
    ("?alias=%00", PREDICT + "?alias=%00", json.dumps({"inputs": [[1.0] * 30]}).encode(), None, 400, "alias"),
    ("key with a lone surrogate", PREDICT, b'{"key": "\\ud800", "inputs": [[' + b"1.0," * 29 + b"1.0]]}", None, 400,
     "key"),
    ("key with NUL", PREDICT, b'{"key": "a\\u0000b", "inputs": [[' + b"1.0," * 29 + b"1.0]]}", None, 400, "key"),
    ("key longer than the log holds", PREDICT, json.dumps({"key": "k" * 201, "inputs": [[1.0] * 30]}).encode(),
     None, 400, "key"),
    ("unknown feature name with a lone surrogate", PREDICT,
     json.dumps({"instances": [dict.fromkeys(FEATURES, 1.0) | {"\ud800": 1}]}).encode(), None, 400, "not a feature"),
    ("/versions/%C2%B2/infer", "/v2/models/cancer/versions/%C2%B2/infer", _v2(_matrix()), None, 400, "version"),
    ("V2 tensor name a list", INFER, _v2(_matrix(name=["a"])), None, 400, "name"),
    ("V2 tensor name an object", INFER, _v2(_matrix(name={"a": 1})), None, 400, "name"),
    ("V2 parameters a list", INFER, _v2(_matrix(), parameters=[1]), None, 400, "parameters"),
    ("V2 parameters a string", INFER, _v2(_matrix(), parameters="x"), None, 400, "parameters"),
    ("V2 tensor parameters a list", INFER, _v2(_matrix(parameters=[1])), None, 400, "parameters"),
    ("V2 tensor parameters a string", INFER, _v2(_matrix(parameters="x")), None, 400, "parameters"),
    ("binary_data_size 239 for FP64", INFER, *_binary(239, FP64_ROW[:239]), 400, "binary_data_size"),
    ("binary_data_size as a string", INFER, *_binary("240", FP64_ROW), 400, "binary_data_size"),
    ("binary_data_size larger than the bytes present", INFER, *_binary(240, FP64_ROW[:80]), 400,
     "binary_data_size"),
    ("negative Inference-Header-Content-Length", INFER, *_binary(240, FP64_ROW, header_length=-5), 400,
     "Inference-Header-Content-Length"),
    ("Inference-Header-Content-Length past the body", INFER, *_binary(240, FP64_ROW, header_length=10**6), 400,
     "Inference-Header-Content-Length"),
    ("V2 BYTES with numeric data", INFER, _v2(_matrix(datatype="BYTES")), None, 400, "BYTES"),
    ("V2 FP64 with string data", INFER, _v2(_matrix(data=["1.0"] * 30)), None, 400, "FP64"),
    ("V2 datatype a list", INFER, _v2(_matrix(datatype=["FP64"])), None, 400, "datatype"),
    ("V2 unknown datatype", INFER, _v2(_matrix(datatype="FP128")), None, 400, "datatype"),
    ("V2 INT64 beyond 64 bits", INFER, _v2(_matrix(datatype="INT64", data=[2**70] * 30)), None, 400, "INT64"),
    ("V2 FP32 beyond float32", INFER, _v2(_matrix(datatype="FP32", data=[1e39] * 30)), None, 400, "FP32"),
    ("V2 body nested 100,000 deep", INFER, b"[" * 100_000, None, 400, "not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("url", "body", "headers", "status", "named"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_input_answers_4xx_naming_what_is_wrong(send, url, body, headers, status, named):
    answered, content = send(url, body, headers)
    assert answered == status, content
    answer = json.loads(content)
    assert named in json.dumps(answer), answer
    if "errors" in answer:
        assert all({"row", "field", "message"} <= set(e) for e in answer["errors"])


def test_a_v2_id_that_cannot_be_encoded_is_still_answered(send):
    """The V2 id is echoed in the answer; orjson refuses a lone surrogate, which used to kill the front's processor
    thread (every later request of the process unanswered)."""
    status, content = send(INFER, b'{"id": "\\ud800", "inputs": ' + json.dumps([_matrix()]).encode() + b"}")
    assert status == 200, content
    assert json.loads(content)["id"] == "\ud800"
    assert send(INFER, _v2(_matrix()))[0] == 200


def test_an_integer_beyond_64_bits_in_a_float_input_is_answered_and_logged_as_a_float(send):
    """1180591620717411303424 (2^70) is a number a float input takes: answered, and logged as the float the model
    saw (orjson cannot encode the integer, which kept the log's whole batch from being written)."""
    body = {"inputs": [[2**70, *ROW29]]}
    status, content = send(PREDICT, json.dumps(body).encode())
    assert status == 200, content
    assert prediction_log().flush() == 1
    logged = PredictionLog.objects.get(request_id=json.loads(content)["request_id"])
    assert float(logged.inputs[0]["mean radius"]) == 2.0**70
