"""JSON a client writes that Postgres cannot store: a NUL character (jsonb and text refuse \\u0000) or a lone
surrogate (not UTF-8) anywhere in a value or a key answers 400 naming the field, never a 500, and stores nothing."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from experiments.models import Experiment
from registry import services as registry
from registry.models import ModelVersion, RegisteredModel, RegistryEvent
from tests.conftest import upload

pytestmark = pytest.mark.django_db

NUL, SURROGATE = "a\x00b", "\ud800"


@pytest.fixture
def staff_client(staff) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff)
    return client


@pytest.fixture
def two_versions(classifier_model, logreg, forest):
    for trained in (logreg, forest):
        registry.model_version_register(model=classifier_model, artifact=trained.artifact, metrics={"accuracy": 1.0})


def send(client: APIClient, method: str, url: str, body):
    """JSON as a client writes it: json.dumps escapes a lone surrogate as \\ud800, which the parser turns back."""
    return getattr(client, method)(url, json.dumps(body), content_type="application/json")


def _model_body(bad: str) -> list[tuple[str, dict]]:
    return [
        ("tags", {"name": "m", "task": "regression", "tags": {"team": bad}}),
        ("tags", {"name": "m", "task": "regression", "tags": {bad: "x"}}),
        ("tags", {"name": "m", "task": "regression", "tags": {"nested": [{"deep": [bad]}]}}),
        ("gate_rules", {"name": "m", "task": "regression", "gate_rules": [f"rmse <= 5{bad}"]}),
    ]


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
def test_model_creation_and_update(staff_client, classifier_model, bad):
    for field, body in _model_body(bad):
        response = send(staff_client, "post", "/api/v1/models/", body)
        assert response.status_code == 400 and field in response.json(), (body, response.content[:300])
    response = send(staff_client, "patch", "/api/v1/models/cancer/", {"tags": {"owner": bad}})
    assert response.status_code == 400 and "tags" in response.json(), response.content[:300]
    assert RegisteredModel.objects.count() == 1 and RegisteredModel.objects.get().tags == {}


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
@pytest.mark.parametrize("field", ["tags", "params", "lineage", "library_versions", "metrics", "signature"])
def test_version_registration(staff_client, classifier_model, logreg, field, bad):
    values = {
        "metrics": {f"accuracy{bad}": 0.99},
        "signature": {"inputs": [{"name": f"mean radius{bad}", "dtype": "float"}] * 30},
    }
    value = values.get(field, {"k": [bad]})
    body = {"artifact": upload(logreg.artifact), field: json.dumps(value)}
    response = staff_client.post("/api/v1/models/cancer/versions/", body, format="multipart")
    assert response.status_code == 400 and field in response.json(), response.content[:300]
    assert ModelVersion.objects.count() == 0 and RegistryEvent.objects.count() == 1  # model.created only


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
def test_experiment_creation(staff_client, two_versions, bad):
    arms = [{"name": "a", "version": 1, "weight": 1}, {"name": "b", "version": 2, "weight": 1}]
    cases = [
        ("primary_metric", {"primary_metric": {"kind": "conversion", "event": f"buy{bad}"}}),
        ("guardrail_metrics", {"primary_metric": {"kind": "quality"},
                               "guardrail_metrics": [{"kind": "conversion", "event": bad}]}),
    ]  # fmt: skip
    for field, body in cases:
        response = send(
            staff_client, "post", "/api/v1/experiments/", {"name": "e", "model": "cancer", "arms": arms, **body}
        )
        assert response.status_code == 400 and field in response.json(), (body, response.content[:300])
    assert Experiment.objects.count() == 0


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.text()),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tags=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4))
def test_any_tags_are_stored_as_given_or_refused_with_a_400(staff_client, classifier_model, tags):
    response = send(staff_client, "patch", "/api/v1/models/cancer/", {"tags": tags})
    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 200:
        assert RegisteredModel.objects.get(name="cancer").tags == tags
    else:
        assert "tags" in response.json()


OTHER_JSON_WRITES = [  # (field named in the answer, path, body): JSON fields outside the registry
    ("tags", "/api/v1/features/views/", lambda bad: {**VIEW, "tags": {"team": bad}}),
    ("tags", "/api/v1/features/views/", lambda bad: {**VIEW, "tags": {bad: "x"}}),
    ("description", "/api/v1/features/views/", lambda bad: {**VIEW, "description": bad}),
    ("description", "/api/v1/features/entities/", lambda bad: {"name": "u2", "join_key": "k", "description": bad}),
    ("items", "/api/v1/feedback", lambda bad: {"items": [{"request_id": "r1", "actual": bad}]}),
    ("analysis", "/api/v1/models/cancer/rollouts/", lambda bad: {"version": 2, "analysis": {bad: 1.0}}),
    ("description", "/api/v1/experiments/", lambda bad: {"name": "e", "model": "cancer", "description": bad}),
]
VIEW = {"name": "v", "entity": "user", "ttl": 3600, "features": [{"name": "f", "dtype": "float"}]}


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
def test_json_writes_of_the_other_apps(staff_client, two_versions, bad):
    send(staff_client, "post", "/api/v1/features/entities/", {"name": "user", "join_key": "user_id"})
    for field, path, body in OTHER_JSON_WRITES:
        response = send(staff_client, "post", path, body(bad))
        assert response.status_code == 400, (path, body(bad), response.content[:300])
        assert field in response.json(), (path, response.json())
        assert "cannot be stored" in " ".join(response.json()[field]), response.json()


def test_json_nested_past_the_parsers_depth_answers_400(staff_client, classifier_model):
    body = '{"tags": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = staff_client.patch("/api/v1/models/cancer/", body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]


class _CutShort:
    """A body whose client went away (or the web worker timed it out): reading it fails, as config/asgi.py makes it."""

    def read(self, *args) -> bytes:
        raise OSError("the client sent 12 of 1,000 bytes")

    readline = read


def test_a_body_that_cannot_be_read_in_full_answers_400_and_stores_nothing(staff_client):
    response = staff_client.post(
        "/api/v1/models/", b"", content_type="application/json", CONTENT_LENGTH="1000", **{"wsgi.input": _CutShort()}
    )
    assert response.status_code == 400, response.content[:300]
    assert "could not be read" in response.json()["detail"]
    assert not RegisteredModel.objects.exists()
