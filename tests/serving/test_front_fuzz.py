"""Fuzzing the ASGI front's own parsing (serving/front.py, serving/hotpath.py, serving/v2.py), not DRF's: whatever
bytes arrive as the body, the query string, the V2 version segment or the binary-tensor header, a prediction request
is answered with JSON and never with a 5xx, and the request-processor thread lives on (issue 13, item 9)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.asgi import application
from serving.front import request_processor

pytestmark = pytest.mark.django_db(transaction=True)
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def processor_lets_go_of_the_database():
    yield
    request_processor().close_connections()


@pytest.fixture
def front(production, key):
    """Send one request through the front as uvicorn would (path decoded, query raw) and get (status, JSON)."""

    def send(path: str, body: bytes, query: bytes = b"", headers: dict[bytes, bytes] | None = None):
        headers = {b"authorization": f"Api-Key {key}".encode(), **(headers or {})}
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode("utf-8", "surrogatepass"), "query_string": query, "root_path": "",
            "headers": list(headers.items()), "client": ("127.0.0.1", 40000), "server": ("testserver", 80),
        }  # fmt: skip
        incoming = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict] = []

        async def receive():
            if incoming:
                return incoming.pop()
            await asyncio.sleep(3600)

        async def deliver(message):
            sent.append(message)

        # A time limit: a request that kills the processor thread is never answered.
        asyncio.run(asyncio.wait_for(application(scope, receive, deliver), 10))
        content = b"".join(m.get("body", b"") for m in sent[1:])
        return sent[0]["status"], json.loads(content)

    return send


# JSON that looks like a request (the right keys, nearly the right shapes) with hostile leaves, so the fuzzing gets
# past the JSON parser into the front's own checks.
hostile_text = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["\ud800", "a\x00", "²", "k" * 300, "FP64", "BYTES", "INT64", "FP32", "BOOL", "input-0"]),
)
leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(10**400), 10**400), st.floats(), hostile_text,
    st.sampled_from([1e308, -1e308, 3.5e38, 2**63, 2**64, 2**70, 0, 1, 30, -1, 239, 240]),
)  # fmt: skip
value = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=3),
                     max_leaves=12)  # fmt: skip
row = st.lists(st.floats(allow_nan=False) | leaf, min_size=29, max_size=31)
native = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(row | value, max_size=3),
        "instances": st.lists(value, max_size=3),
        "key": value,
    },  # fmt: skip
)
tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input-0", "mean radius"]) | value, "shape": st.sampled_from([[1, 30], [30], [1]])
        | value, "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "BOOL", "UINT8"]) | value,
        "data": row | value, "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": value}) | value,
    },
)  # fmt: skip
v2_request = st.fixed_dictionaries(
    {}, optional={"inputs": st.lists(tensor, max_size=2) | value, "id": value, "parameters": value}
)


def _encoded(request) -> bytes:
    return json.dumps(request, allow_nan=True).encode()  # ensure_ascii: lone surrogates as \ud800, as clients send


def _answered(status: int, answer) -> None:
    assert status < 500, answer
    assert isinstance(answer, dict)


@FUZZ
@given(body=st.binary(max_size=300) | native.map(_encoded), query=st.binary(max_size=40))
def test_native_predict_never_answers_5xx(front, body, query):
    _answered(*front("/api/v1/models/cancer/predict", body, query))


@FUZZ
@given(
    name=st.sampled_from(["version", "alias", "Version", "alias[]"]),
    raw=st.binary(max_size=12),
    twice=st.booleans(),
)
def test_native_predict_query_parameters_never_answer_5xx(front, name, raw, twice):
    query = f"{name}={quote_from_bytes(raw)}".encode()
    body = json.dumps({"inputs": [[1.0] * 30]}).encode()
    _answered(*front("/api/v1/models/cancer/predict", body, query + b"&" + query if twice else query))


@FUZZ
@given(
    body=st.binary(max_size=300) | v2_request.map(_encoded),
    version=st.none() | st.text(st.characters(exclude_characters="/", exclude_categories=[]), min_size=1, max_size=6),
    header_length=st.none() | st.binary(max_size=8) | st.integers(-5, 400).map(lambda n: str(n).encode()),
    tail=st.binary(max_size=260),
)
def test_v2_infer_never_answers_5xx(front, body, version, header_length, tail):
    path = "/v2/models/cancer/infer" if version is None else f"/v2/models/cancer/versions/{version}/infer"
    headers = {} if header_length is None else {b"inference-header-content-length": header_length}
    _answered(*front(path, body + (tail if header_length is not None else b""), headers=headers))
