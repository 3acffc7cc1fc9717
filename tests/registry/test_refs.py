"""Version references (models:/NAME/3, models:/NAME@alias, or a plain number) wherever a version is named: the
registry's aliases, rollouts, rollback, experiments' arms, monitors, and the commands."""

from __future__ import annotations

import math

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from experiments.models import Experiment
from monitoring.models import Monitor
from registry import refs
from registry import services as registry
from registry.models import ModelAlias, ModelVersion
from rollouts.models import Rollout
from tests.serving.conftest import fresh_serving_state, production  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture
def challenger(production, classifier_model, forest):  # noqa: F811
    """cancer v2, validated, with the alias "staging"; v1 is production."""
    version = registry.model_version_register(
        model=classifier_model, artifact=forest.artifact, metrics={"accuracy": 0.97, "f1": 0.99}
    )
    registry.alias_create(model=classifier_model, name="staging", version=version)
    return version


def test_the_parser_reads_the_grammar_and_names_what_is_wrong():
    assert refs.parse(3) == refs.parse("3") == refs.parse(" 3 ") == refs.VersionRef(version=3)
    assert refs.parse("models:/churn/3") == refs.VersionRef(model="churn", version=3)
    assert refs.parse("models:/churn@production") == refs.VersionRef(model="churn", alias="production")
    assert str(refs.parse("models:/my_model-2@canary-eu")) == "models:/my_model-2@canary-eu"
    assert refs.parse("models:/churn/003") == refs.VersionRef(model="churn", version=3)  # as the client reads it
    misspelt = ["models:/churn", "models:/churn/0", "models:/churn/v3", "models:/churn@Prod", "models:/@x"]
    misspelt += ["models:/a b/1", "churn@production", "models:/churn/3/extra", "", 0, -1, True, 1.5, None, [3]]
    misspelt += ["9" * 5000, "models:/churn/" + "9" * 5000, "models:/churn/000", "00", 2**31]
    for bad in misspelt:
        with pytest.raises(ValidationError) as refused:
            refs.parse(bad, field="candidate")
        assert list(refused.value.message_dict) == ["candidate"]


def test_the_resolver_finds_the_version_or_says_which_part_is_wrong(challenger):
    model = challenger.model
    assert refs.resolve(model, 1).version == 1
    assert refs.resolve(model, "models:/cancer/2") == challenger
    assert refs.resolve(model, "models:/cancer@staging") == challenger
    assert refs.resolve(model, "models:/cancer@production").version == 1
    for ref, message in [
        ("models:/diabetes/1", "models:/diabetes/1 names the model 'diabetes', not 'cancer'"),
        ("models:/cancer/9", "cancer has no version 9"),
        ("models:/cancer@gone", "cancer has no alias 'gone' (its aliases: production, staging)"),
        (9, "cancer has no version 9"),
    ]:
        with pytest.raises(ValidationError) as refused:
            refs.resolve(model, ref)
        assert refused.value.message_dict["version"] == [message]


references = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\Amodels:/[-a-zA-Z0-9_]{1,12}(/[0-9]{1,12}|@[a-zA-Z0-9_-]{0,10})?\Z"),
    st.sampled_from(["cancer", "production", "staging"]).map(lambda s: f"models:/cancer@{s}"),
    st.integers(min_value=-(2**40), max_value=2**40).map(lambda n: f"models:/cancer/{n}"),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.none(), st.booleans(), st.floats(allow_nan=True), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=references)
@example(value="models:/cancer/2")
@example(value="\x00")
@example(value="models:/cancer/99999999999")
def test_any_value_resolves_to_a_version_or_a_validation_error_on_the_field(challenger, value):
    try:
        version = refs.resolve(challenger.model, value, field="version")
    except ValidationError as exc:
        assert list(exc.message_dict) == ["version"] and all(isinstance(m, str) for m in exc.messages)
    else:
        assert isinstance(version, ModelVersion) and version.model_id == challenger.model_id


json_references = references.filter(lambda v: not isinstance(v, float) or math.isfinite(v))  # what JSON can carry


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=json_references)
def test_the_alias_api_answers_any_version_with_a_move_or_a_400_never_a_500(api, challenger, value):
    answer = api.put("/api/v1/models/cancer/aliases/staging/", {"version": value}, format="json")
    assert answer.status_code in (200, 400), answer.content
    if answer.status_code == 400:
        assert list(answer.json()) == ["version"]


def test_aliases_are_created_and_moved_by_reference(api, challenger):
    created = api.post("/api/v1/models/cancer/aliases/", {"alias": "candidate", "version": "models:/cancer@staging"},
                       format="json")  # fmt: skip
    assert created.status_code == 201 and created.json()["version"] == 2
    moved = api.put("/api/v1/models/cancer/aliases/candidate/", {"version": "models:/cancer/1"}, format="json")
    assert moved.status_code == 200 and moved.json()["version"] == 1
    assert api.put("/api/v1/models/cancer/aliases/candidate/", {"version": 2}, format="json").json()["version"] == 2
    for bad, message in [
        ("models:/diabetes/1", "names the model 'diabetes', not 'cancer'"),
        ("models:/cancer@nope", "cancer has no alias 'nope'"),
        ("cancer@staging", "is not a version number, models:/<name>/<version> or models:/<name>@<alias>"),
    ]:
        answer = api.put("/api/v1/models/cancer/aliases/candidate/", {"version": bad}, format="json")
        assert answer.status_code == 400 and message in answer.json()["version"][0], answer.content
    assert ModelAlias.objects.get(name="candidate").version == challenger


def test_rollouts_and_rollback_take_references(api, challenger):
    wrong = api.post("/api/v1/models/cancer/rollouts/", {"version": "models:/diabetes/2"}, format="json")
    assert wrong.status_code == 400 and "not 'cancer'" in wrong.json()["version"][0]
    assert api.post("/api/v1/models/cancer/rollouts/", {}, format="json").json() == {
        "version": ["name the candidate version"]
    }
    started = api.post("/api/v1/models/cancer/rollouts/", {"candidate": "models:/cancer@staging"}, format="json")
    assert started.status_code == 201 and started.json()["candidate"] == 2, started.content
    # A rollback naming the version it expects to take out is refused when another one would be.
    refused = api.post("/api/v1/models/cancer/rollback/", {"version": "models:/cancer@production"}, format="json")
    assert refused.status_code == 400
    assert refused.json()["version"] == [
        f"a rollback takes out rollout {Rollout.objects.get().pk}'s candidate, v2, not v1: nothing done"
    ]
    assert Rollout.objects.get().status == "pending"
    done = api.post("/api/v1/models/cancer/rollback/", {"version": "models:/cancer/2"}, format="json")
    assert done.status_code == 200 and done.json() == {"taken_out": 2, "serving": 1}


def test_monitors_pin_a_referenced_version(api, challenger):
    body = {"model": "cancer", "name": "staging-watch", "version": "models:/cancer@staging"}
    created = api.post("/api/v1/monitors", body, format="json")
    assert created.status_code == 201 and created.json()["version"] == 2
    wrong = api.post("/api/v1/monitors", {**body, "name": "other", "version": "models:/diabetes/1"}, format="json")
    assert wrong.status_code == 400 and "not 'cancer'" in wrong.json()["version"][0]
    assert Monitor.objects.get().version == 2


def test_experiment_arms_take_references_in_the_api_and_the_command(api, challenger, capsys):
    body = {
        "name": "by-ref", "model": "cancer", "primary_metric": "conversion:purchase",
        "arms": [{"name": "control", "version": "models:/cancer@production", "weight": 50},
                 {"name": "forest", "version": "models:/cancer/2", "weight": 50}],
    }  # fmt: skip
    created = api.post("/api/v1/experiments/", body, format="json")
    assert created.status_code == 201, created.content
    assert [(a["name"], a["version"]) for a in created.json()["arms"]] == [("control", 1), ("forest", 2)]
    body["arms"][1]["version"] = "models:/diabetes/2"
    wrong = api.post("/api/v1/experiments/", {**body, "name": "wrong"}, format="json")
    assert wrong.status_code == 400 and wrong.json()["arms"] == [
        "[1] models:/diabetes/2 names the model 'diabetes', not 'cancer'"
    ]
    body["arms"][1]["version"] = "forest"
    misspelt = api.post("/api/v1/experiments/", {**body, "name": "misspelt"}, format="json")
    assert misspelt.status_code == 400 and "is not a version number" in misspelt.json()["arms"]["1"]["version"][0]

    arms = ["--arm", "control=models:/cancer@production:50", "--arm", "forest=models:/cancer@staging:50"]
    call_command("experiment", "create", "by-ref-cli", "--model", "cancer", "--metric", "conversion:purchase", *arms)
    arms = Experiment.objects.get(name="by-ref-cli").arms.order_by("position")
    assert [(a.name, a.version.version, a.weight) for a in arms] == [("control", 1, 50), ("forest", 2, 50)]
    with pytest.raises(CommandError, match="expected NAME=VERSION:WEIGHT"):
        call_command("experiment", "create", "x", "--model", "cancer", "--metric", "quality",
                     "--arm", "control=models:/cancer:50", "--arm", "b=2:50")  # fmt: skip


def test_rollout_and_rollback_commands_take_references(challenger, capsys):
    with pytest.raises(CommandError, match="^version: models:/diabetes/2 names the model 'diabetes', not 'cancer'$"):
        call_command("rollout", "start", "cancer", "models:/diabetes/2")
    with pytest.raises(CommandError, match="two different candidates named"):
        call_command("rollout", "start", "models:/cancer/2", "1")
    call_command("rollout", "start", "models:/cancer@staging", "--stages", "50,100")
    assert "v2 vs v1, pending" in capsys.readouterr().out
    with pytest.raises(CommandError, match="takes the model's name"):
        call_command("rollout", "pause", "models:/cancer/2")
    with pytest.raises(CommandError, match="takes out rollout .*'s candidate, v2, not v1: nothing done"):
        call_command("rollback", "models:/cancer/1")
    call_command("rollback", "models:/cancer@staging")
    assert "v1 serves production again, v2 is rolled back" in capsys.readouterr().out
    with pytest.raises(CommandError, match="^model: no model named 'nope'$"):
        call_command("rollback", "models:/nope/1")


def test_check_drift_runs_the_monitor_watching_the_referenced_version(challenger, capsys):
    call_command("check_drift", "models:/cancer@production", "--no-progress")
    assert Monitor.objects.get().version == 1  # none watched v1: one pinned to it, named v1
    assert "cancer watching v1: pinned" in capsys.readouterr().out
    call_command("check_drift", "models:/cancer/1", "--no-progress")  # the same monitor again
    assert Monitor.objects.count() == 1
    with pytest.raises(CommandError, match="monitor 'v1' watches v1, not v2"):
        call_command("check_drift", "models:/cancer/2", "--monitor", "v1", "--no-progress")
    with pytest.raises(CommandError, match="^model: "):
        call_command("check_drift", "models:/cancer", "--no-progress")
