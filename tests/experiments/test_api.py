"""The experiments API as a script would use it: token or API key, JSON in, field-level 400s out."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from experiments.models import Experiment, ExperimentStatus
from registry.models import ModelAlias
from tests.serving.conftest import make_key

pytestmark = pytest.mark.django_db
BASE = "/api/v1/experiments/"


def body(**changes):
    return {
        "name": "api-test", "model": "cancer", "primary_metric": {"kind": "conversion", "event": "purchase"},
        "arms": [{"name": "control", "version": 1, "weight": 50}, {"name": "forest", "version": 2, "weight": 50}],
        **changes,
    }  # fmt: skip


def test_create_start_change_weights_stop_and_conclude(api, challenger):
    created = api.post(BASE, body(start=True), format="json")
    assert created.status_code == 201, created.content
    assert created.json()["status"] == "running" and created.json()["created_by"] == "ada"
    assert [arm["ranges"] for arm in created.json()["arms"]] == [[[0, 5000]], [[5000, 10000]]]

    weights = api.post(BASE + "api-test/weights/", {"weights": {"control": 90, "forest": 10}}, format="json")
    assert [arm["weight"] for arm in weights.json()["arms"]] == [90, 10]
    results = api.get(BASE + "api-test/results/").json()
    assert results["trustworthy"] is True and results["allocation"]["srm"]["threshold"] == 0.001
    assert "planned sample size" in results["peeking"]

    assert api.post(BASE + "api-test/stop/").json()["status"] == "stopped"
    assert (
        "promote" in api.post(BASE + "api-test/conclude/", {"winner": "forest", "promote": "x"}, format="json").json()
    )
    concluded = api.post(BASE + "api-test/conclude/", {"winner": "forest"}, format="json")
    assert concluded.json()["status"] == "concluded" and concluded.json()["winner"] == "forest"
    assert ModelAlias.objects.get(name="production").version.version == 2
    actions = [event["action"] for event in api.get(BASE + "api-test/events/").json()["results"]]
    assert actions == ["experiment.concluded", "experiment.stopped", "experiment.weights_changed",
                       "experiment.started", "experiment.created"]  # fmt: skip
    assert [e["name"] for e in api.get(BASE + "?model=cancer").json()["results"]] == ["api-test"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model": "nope"}, "model"),
        ({"arms": [{"name": "control", "version": 1, "weight": 50}]}, "arms"),
        ({"arms": [{"name": "c", "version": 1, "weight": 1}, {"name": "t", "version": 7, "weight": 1}]}, "arms"),
        ({"arms": [{"name": "c", "version": 1, "weight": -1}, {"name": "t", "version": 2, "weight": 1}]}, "arms"),
        ({"primary_metric": {"kind": "clicks"}}, "primary_metric"),
        ({"guardrail_metrics": "quality"}, "guardrail_metrics"),
        ({"name": "Not A Slug"}, "name"),
        ({"alpha": 0.9}, "alpha"),
    ],
)
def test_bad_input_is_a_400_with_the_field_and_stores_nothing(api, challenger, changes, field):
    response = api.post(BASE, body(**changes), format="json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert not Experiment.objects.exists()


def test_a_start_that_fails_creates_nothing_either(api, challenger):
    assert api.post(BASE, body(name="first", start=True), format="json").status_code == 201
    response = api.post(BASE, body(name="second", start=True), format="json")
    assert response.status_code == 409  # the model is held by another experiment: a state conflict
    assert "already has experiment 'first' running" in response.json()["status"][0]
    assert list(Experiment.objects.values_list("name", flat=True)) == ["first"]


def test_wrong_state_and_unknown_arms_are_400s(api, challenger):
    api.post(BASE, body(), format="json")
    assert api.post(BASE + "api-test/stop/").json() == {"status": ["experiment 'api-test' is draft, not running"]}
    assert "weights" in api.post(BASE + "api-test/weights/", {"weights": {"control": 1}}, format="json").json()
    assert api.post(BASE + "api-test/conclude/", {"winner": "forest"}, format="json").status_code == 400
    assert api.get(BASE + "missing/").status_code == 404


def test_results_default_to_the_period_since_the_last_weight_change_and_period_all_mixes(api, challenger):
    api.post(BASE, body(start=True), format="json")
    api.post(BASE + "api-test/weights/", {"weights": {"control": 90, "forest": 10}}, format="json")
    default = api.get(BASE + "api-test/results/").json()
    assert default["period"]["selected"] == "since_weight_change" and default["period"]["since"] is not None
    assert default["allocation"]["srm"]["mixed_allocations"] is False
    everything = api.get(BASE + "api-test/results/?period=all").json()
    assert everything["period"]["mixed_allocations"] is True and everything["trustworthy"] is False
    assert "mix periods with different allocations" in everything["period"]["note"]
    wrong = api.get(BASE + "api-test/results/?period=yesterday")
    assert wrong.status_code == 400 and "period" in wrong.json()


def test_every_endpoint_needs_authentication_and_api_keys_need_the_registry_scopes(challenger, api):
    api.post(BASE, body(), format="json")
    anonymous = APIClient()
    for url in (BASE, BASE + "api-test/", BASE + "api-test/results/"):
        assert anonymous.get(url).status_code in (401, 403)
    assert anonymous.post(BASE + "api-test/start/").status_code in (401, 403)
    reader = APIClient(HTTP_AUTHORIZATION=f"Api-Key {make_key('registry:read')}")
    assert reader.get(BASE + "api-test/results/").status_code == 200
    assert reader.post(BASE + "api-test/start/").status_code == 403
    writer = APIClient(HTTP_AUTHORIZATION=f"Api-Key {make_key('registry:read', 'registry:write')}")
    assert writer.post(BASE + "api-test/start/").json()["status"] == ExperimentStatus.RUNNING


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(changes=st.dictionaries(st.sampled_from(sorted(body())), json_values, max_size=3))
def test_any_malformed_create_is_a_400_never_a_server_error(api, challenger, changes):
    response = api.post(BASE, body(**{**changes, "name": "fuzzed"}), format="json")
    assert response.status_code in (201, 400), response.content
    Experiment.objects.filter(name="fuzzed").delete()


arm_values = st.fixed_dictionaries(
    {"name": st.text(max_size=6) | st.sampled_from(["control", "forest"]), "version": st.integers(),
     "weight": st.integers()},
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(arms=st.lists(arm_values, max_size=4), weights=st.dictionaries(st.sampled_from(["control", "forest", "x"]),
                                                                      st.integers()))  # fmt: skip
def test_any_arms_or_weights_are_a_400_never_a_server_error(api, challenger, arms, weights):
    response = api.post(BASE, body(name="fuzzed", arms=arms), format="json")
    assert response.status_code in (201, 400), response.content
    if response.status_code == 400:
        response = api.post(BASE, body(name="fuzzed"), format="json")
    reweighted = api.post(BASE + "fuzzed/weights/", {"weights": weights}, format="json")
    assert reweighted.status_code in (200, 400), reweighted.content
    Experiment.objects.filter(name="fuzzed").delete()
