"""Input validation against the signature: field-level 400s, 413 for size, and no input that produces a 500."""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.prediction_log import masked_inputs
from serving.validation import FLOAT32_MAX, InputError, rows_from_payload
from tests.serving.conftest import post, rows_of

URL = "/api/v1/models/cancer/predict"
SIGNATURE = {
    "inputs": [
        {"name": "age", "dtype": "int", "min": 0, "max": 130},
        {"name": "income", "dtype": "float", "nullable": True},
        {"name": "plan", "dtype": "category", "allowed": ["free", "pro"]},
        {"name": "active", "dtype": "bool"},
    ],
    "outputs": {},
}
GOOD = {"age": 30, "income": 1.5, "plan": "pro", "active": True}


def problems(payload) -> list[tuple]:
    with pytest.raises(InputError) as caught:
        rows_from_payload(payload, SIGNATURE, max_batch=10)
    return [(e["row"], e["field"]) for e in caught.value.errors]


def test_good_rows_come_back_in_signature_order():
    assert rows_from_payload({"instances": [GOOD, {**GOOD, "income": None}]}, SIGNATURE, 10) == [
        [30, 1.5, "pro", True],
        [30, None, "pro", True],
    ]
    assert rows_from_payload({"inputs": [[1, 2.0, "free", False]]}, SIGNATURE, 10) == [[1, 2.0, "free", False]]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({k: v for k, v in GOOD.items() if k != "age"}, "age"),  # missing
        ({**GOOD, "colour": "red"}, "colour"),  # unknown
        ({**GOOD, "age": "thirty"}, "age"),  # wrong type
        ({**GOOD, "age": 2.5}, "age"),  # not an integer
        ({**GOOD, "age": True}, "age"),  # bool is not an int here
        ({**GOOD, "age": 131}, "age"),  # out of range
        ({**GOOD, "plan": "gold"}, "plan"),  # not an allowed category
        ({**GOOD, "active": 1}, "active"),  # not a bool
    ],
)
def test_each_bad_field_is_named_with_its_row(row, field):
    assert problems({"instances": [GOOD, row]}) == [(1, field)]


def test_nan_and_infinity_are_refused_where_not_nullable():
    signature = {"inputs": [{"name": "x", "dtype": "float"}], "outputs": {}}
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(InputError):
            rows_from_payload({"instances": [{"x": value}]}, signature, 10)


def test_batch_limits_and_shapes():
    assert problems({"instances": [GOOD] * 11}) == [(None, "instances")]
    assert problems({"instances": []}) == [(None, "instances")]
    assert problems({"inputs": [[1, 2.0]]}) == [(0, None)]
    assert problems({"instances": [GOOD], "inputs": [[1, 2.0, "free", True]]}) == [(None, None)]
    assert problems([GOOD]) == [(None, None)]


FREE = {
    "inputs": [
        {"name": "n", "dtype": "int", "nullable": True},
        {"name": "x", "dtype": "float", "nullable": True},
        {"name": "city", "dtype": "category", "nullable": True},
    ],
    "outputs": {},
}


def test_an_integer_in_a_float_input_comes_back_as_the_float_the_model_sees():
    rows = rows_from_payload({"inputs": [[1, 2**70, "a"]], "key": "k"}, FREE, 10)
    assert rows == [[1, 2.0**70, "a"]] and type(rows[0][1]) is float and type(rows[0][0]) is int
    assert rows_from_payload({"instances": [{"x": 3}]}, FREE, 10) == [[None, 3.0, None]]
    assert type(rows_from_payload({"instances": [{"x": 3}]}, FREE, 10)[0][1]) is float


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"x": 10**400}, "x"),  # beyond float64 (OverflowError: a 500 before)
        ({"x": -(10**309)}, "x"),
        ({"n": 2**63}, "n"),  # beyond int64
        ({"n": -(2**63) - 1}, "n"),
        ({"n": 1e300}, "n"),  # an integral float, but no int64
        ({"city": "\ud800"}, "city"),  # a lone surrogate: orjson cannot encode it
        ({"city": "a\x00b"}, "city"),  # NUL: Postgres jsonb cannot hold it
        ({"city": "c" * 1025}, "city"),  # longer than any category
        ({"city": 2**64}, "city"),
    ],
)
def test_values_that_could_not_be_stored_are_refused_naming_the_field(row, field):
    with pytest.raises(InputError) as caught:
        rows_from_payload({"instances": [row]}, FREE, 10)
    assert [(e["row"], e["field"]) for e in caught.value.errors] == [(0, field)]


def test_a_float32_model_refuses_what_float32_cannot_hold():
    for value in (1e308, 3.5e38, -1e39, 10**39):
        with pytest.raises(InputError) as caught:
            rows_from_payload({"inputs": [[None, value, None]]}, FREE, 10, float_limit=FLOAT32_MAX)
        assert caught.value.errors[0]["field"] == "x"
    assert rows_from_payload({"inputs": [[None, 3.4e38, None]]}, FREE, 10, float_limit=FLOAT32_MAX)
    assert rows_from_payload({"inputs": [[None, 1e308, None]]}, FREE, 10)  # float64 models take it


unstorable_text = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=[]), max_size=6),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=[]), min_size=1),
    st.sampled_from(["\x00", "a\x00", "k" * 1025, "\udfff"]),
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | unstorable_text | st.integers(-(2**80), 2**80)


@settings(max_examples=300)
@given(row=st.fixed_dictionaries({}, optional={"n": scalars, "x": scalars, "city": scalars}))
def test_whatever_is_accepted_can_be_logged(row):
    """The prediction log stores what validation accepts: orjson must encode it, Postgres jsonb must hold it."""
    try:
        rows = rows_from_payload({"instances": [row]}, FREE, max_batch=10)
    except InputError:
        return
    encoded = orjson.dumps(masked_inputs(rows, FREE))
    assert b"\\u0000" not in encoded


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=20,
)


@given(payload=json_values)
def test_any_json_is_either_accepted_or_refused_with_input_error(payload):
    try:
        rows = rows_from_payload(payload, SIGNATURE, max_batch=10)
    except InputError as exc:
        assert exc.errors and all({"row", "field", "message"} <= set(e) for e in exc.errors)
    else:
        assert all(len(row) == 4 for row in rows)


@given(row=st.dictionaries(st.sampled_from(["age", "income", "plan", "active", "x"]), json_values, max_size=5))
def test_any_instance_is_either_accepted_or_refused_with_input_error(row):
    try:
        rows = rows_from_payload({"instances": [row]}, SIGNATURE, max_batch=10)
    except InputError as exc:
        assert {e["row"] for e in exc.errors} == {0}
    else:
        assert set(row) <= {"age", "income", "plan", "active"} and len(rows[0]) == 4


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=json_values)
def test_the_endpoint_never_answers_500(caller, production, payload):
    response = post(caller, URL, payload)
    assert response.status_code in (200, 400), response.content


@pytest.mark.django_db
def test_http_errors_name_the_row_and_field(caller, production, logreg):
    rows = rows_of(logreg.X_test, 2)
    rows[1]["mean radius"] = "big"
    response = post(caller, URL, {"instances": rows})
    assert response.status_code == 400
    assert response.json()["errors"] == [{"row": 1, "field": "mean radius", "message": "must be a number, got str"}]
    assert caller.post(URL, "{not json", content_type="application/json").status_code == 400


@pytest.mark.django_db
def test_bodies_over_the_limit_answer_413(caller, production, logreg, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post(caller, URL, {"instances": rows_of(logreg.X_test, 20)})
    assert response.status_code == 413
    assert json.loads(response.content)["detail"].startswith("the body is")


@pytest.mark.django_db
def test_more_rows_than_max_batch_is_400(caller, production, logreg, settings):
    settings.MODELWORKS_MAX_BATCH = 5
    response = post(caller, URL, {"instances": rows_of(logreg.X_test, 6)})
    assert response.status_code == 400 and "at most 5" in response.json()["errors"][0]["message"]


def test_an_error_quotes_a_long_value_shortly():
    with pytest.raises(InputError) as caught:
        rows_from_payload({"instances": [{"n": "x" * 100_000}]}, FREE, 10)
    assert len(caught.value.errors[0]["message"]) < 100
