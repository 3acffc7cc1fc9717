"""Who changes a model's traffic (docs/traffic.md): while a rollout or experiment holds it, the production alias stays,
rollback and archive are refused or end the owner as documented, and the router agrees with the registry afterwards.

Each interaction through the service, the HTTP API (409 with field-level detail) and, where a command does it, the
command's exit code and its one line.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from experiments import services as experiments
from experiments.models import ExperimentStatus
from registry import services as registry
from registry.models import ModelAlias, ModelVersion, RegistryEvent, VersionStatus
from registry.traffic import TrafficConflict, traffic_owner
from rollouts import services as rollouts
from rollouts.models import Rollout, RolloutStatus
from serving import routing
from serving.prediction_log import prediction_log
from tests.experiments import conftest as experiment_fixtures
from tests.serving import conftest as serving
from tests.serving.conftest import post, rows_of

# The serving fixtures (a production `cancer` v1, an API key and a client using it, fresh per-process serving state)
# and the experiments' autouse exposure buffer, so exposures stay in the test.
caller, fresh_serving_state, key, production = (
    serving.caller,
    serving.fresh_serving_state,
    serving.key,
    serving.production,
)
fresh_exposures = experiment_fixtures.fresh_exposures

pytestmark = pytest.mark.django_db
PREDICT = "/api/v1/models/cancer/predict"


@pytest.fixture
def challenger(production, classifier_model, forest):
    """`cancer` v2, validated (gates passed on its submitted metrics), pointed at by no alias."""
    return registry.model_version_register(
        model=classifier_model, artifact=forest.artifact, metrics={"accuracy": 0.97, "f1": 0.99}
    )


@pytest.fixture
def experiment(production, challenger):
    """A running 50/50 experiment: control v1 (production), forest v2."""
    draft = experiments.experiment_create(
        model=production.model, name="forest-vs-logreg", primary_metric={"kind": "quality"}, salt="fixed-salt",
        arms=[{"name": "control", "version": 1, "weight": 50}, {"name": "forest", "version": 2, "weight": 50}],
    )  # fmt: skip
    return experiments.experiment_start(experiment=draft)


@pytest.fixture
def rollout(production, challenger):
    """A running canary rollout of v2 against v1, in its first stage (10% to the candidate)."""
    started = rollouts.rollout_start(model=production.model, candidate=challenger, stages=[10, 100])
    rollouts.tick()
    started.refresh_from_db()
    return started


def served(client, logreg, keys: range) -> dict[str, tuple[int, str]]:
    """What the real prediction endpoint answered per routing key: (version, route)."""
    routing.clear_cache()  # what the route cache's 500 ms does in every process
    rows = rows_of(logreg.X_test, 1)
    answers = {}
    for i in keys:
        response = post(client, PREDICT, {"instances": rows, "key": f"user-{i}"})
        assert response.status_code == 200, response.content
        answers[f"user-{i}"] = (response.json()["version"], response.json()["route"])
    return answers


def statuses(model) -> dict[int, str]:
    return dict(ModelVersion.objects.filter(model=model).values_list("version", "status"))


def refused_command(*argv: str) -> tuple[int, list[str]]:
    """A command that fails: the exit code `manage.py` leaves with (CommandError.returncode) and the lines it prints
    after "CommandError: " (run in-process: `manage.py` would close the test's database connection)."""
    with pytest.raises(CommandError) as failed:
        call_command(*argv)
    return failed.value.returncode, str(failed.value).splitlines()


# --- The production alias while an owner holds the traffic -----------------------------------------------------------


def test_moving_production_during_an_experiment_is_refused_and_the_split_goes_on(
    api, caller, logreg, experiment, challenger, tmp_path
):
    with pytest.raises(TrafficConflict) as refused:
        registry.alias_move(model=experiment.model, name="production", version=challenger)
    assert refused.value.field == "alias" and refused.value.owner.key == f"experiment:{experiment.pk}"
    assert refused.value.message == (
        "cannot move cancer's production alias while experiment 'forest-vs-logreg' holds its traffic: "
        "conclude or stop experiment 'forest-vs-logreg' first"
    )
    with pytest.raises(TrafficConflict, match="conclude or stop experiment 'forest-vs-logreg' first"):
        registry.alias_set(model=experiment.model, name="production", version=challenger)

    answer = api.put("/api/v1/models/cancer/aliases/production/", {"version": 2}, format="json")
    assert answer.status_code == 409
    assert answer.json() == {"alias": [refused.value.message]}

    # The one registry command that moves aliases: the version registers, the alias does not move, exit 1.
    artifact, evaluation = tmp_path / "m.skops", tmp_path / "eval.csv"
    artifact.write_bytes(logreg.artifact)
    evaluation.write_bytes(logreg.eval_csv)
    code, lines = refused_command(
        "register_model", "cancer", str(artifact), "--eval-data", str(evaluation), "--alias", "production"
    )
    assert code == 1 and len(lines) == 1
    assert "experiment 'forest-vs-logreg' holds its traffic: conclude or stop" in lines[0]

    assert ModelAlias.objects.get(name="production").version.version == 1
    assert statuses(experiment.model) == {1: "production", 2: "validated", 3: "validated"}
    assert not RegistryEvent.objects.filter(action="alias.moved").exists()
    answers = served(caller, logreg, range(40))
    assert {route.rsplit(":", 1)[-1] for _, route in answers.values()} == {"control", "forest"}
    assert {version for version, _ in answers.values()} == {1, 2}


def test_moving_production_during_a_rollout_is_refused_and_the_rollout_keeps_its_split(
    api, caller, logreg, rollout, challenger
):
    with pytest.raises(TrafficConflict) as refused:
        registry.alias_move(model=rollout.model, name="production", version=challenger)
    assert refused.value.message.endswith(f"while rollout {rollout.pk} holds its traffic: "
                                          f"promote or abort rollout {rollout.pk} first")  # fmt: skip
    answer = api.put("/api/v1/models/cancer/aliases/production/", {"version": 2}, format="json")
    assert answer.status_code == 409 and f"promote or abort rollout {rollout.pk}" in answer.json()["alias"][0]

    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.RUNNING
    assert statuses(rollout.model) == {1: "production", 2: "canary"}
    # 200 keys: at 10% to the candidate, the chance that none of them lands there is 0.9**200, about 1e-9
    routes = {route for _, route in served(caller, logreg, range(200)).values()}
    assert routes == {f"rollout:{rollout.pk}:baseline", f"rollout:{rollout.pk}:candidate"}


def test_creating_production_during_an_experiment_is_refused(classifier_model, logreg, forest):
    v1 = registry.model_version_register(model=classifier_model, artifact=logreg.artifact,
                                         evaluation_data=logreg.eval_csv)  # fmt: skip
    registry.model_version_register(model=classifier_model, artifact=forest.artifact, metrics={"accuracy": 0.97})
    draft = experiments.experiment_create(
        model=classifier_model, name="no-production-yet", primary_metric={"kind": "quality"},
        arms=[{"name": "a", "version": 1, "weight": 1}, {"name": "b", "version": 2, "weight": 1}],
    )  # fmt: skip
    experiments.experiment_start(experiment=draft)
    with pytest.raises(TrafficConflict, match="cannot create cancer's production alias while experiment"):
        registry.alias_create(model=classifier_model, name="production", version=v1)
    assert not ModelAlias.objects.exists()


def test_other_aliases_move_freely_during_an_experiment(experiment, production, challenger):
    assert registry.alias_create(model=experiment.model, name="staging", version=challenger).version_id == challenger.pk
    registry.alias_move(model=experiment.model, name="staging", version=production)
    # Moving production to where it already is changes nothing, so nothing is refused.
    unmoved = registry.alias_move(model=experiment.model, name="production", version=production)
    assert unmoved.version_id == production.pk


def test_the_owners_end_first_then_move_production(production, challenger, forest):
    """Rollout promote and experiment conclude (direct, or through a rollout) pass the production-alias check."""
    model = production.model
    rollout = rollouts.rollout_start(model=model, candidate=challenger)
    rollouts.rollout_promote(rollout=rollout)
    assert ModelAlias.objects.get(name="production").version_id == challenger.pk
    assert statuses(model) == {1: "archived", 2: "production"}
    assert traffic_owner(model.pk) is None

    metrics = {"accuracy": 0.97, "f1": 0.99}
    third = registry.model_version_register(model=model, artifact=forest.artifact, metrics=metrics)
    fourth = registry.model_version_register(model=model, artifact=forest.artifact, metrics=metrics)
    for name, control, winner, promote in (("direct-win", 2, 3, "direct"), ("staged-win", 3, 4, "rollout")):
        draft = experiments.experiment_create(
            model=model, name=name, primary_metric={"kind": "quality"},
            arms=[{"name": "control", "version": control, "weight": 1},
                  {"name": "new", "version": winner, "weight": 1}],
        )  # fmt: skip
        experiments.experiment_start(experiment=draft)
        assert experiments.experiment_conclude(experiment=draft, winner="new", promote=promote).status == "concluded"
    assert ModelAlias.objects.get(name="production").version_id == third.pk
    staged = Rollout.objects.get(model=model, status=RolloutStatus.PENDING)
    assert staged.candidate_id == fourth.pk and traffic_owner(model.pk).key == f"rollout:{staged.pk}"
    assert statuses(model) == {1: "archived", 2: "archived", 3: "production", 4: "canary"}


# --- Aliases onto versions out of traffic ----------------------------------------------------------------------------


def test_a_non_production_alias_cannot_point_at_a_rolled_back_or_archived_version(api, production, challenger):
    model = production.model
    registry.alias_move(model=model, name="production", version=challenger)  # v1 archived
    rollouts.model_rollback(model=model)  # v1 production again, v2 rolled back
    assert statuses(model) == {1: "production", 2: "rolled_back"}
    with pytest.raises(ValidationError) as refused:
        registry.alias_create(model=model, name="staging", version=challenger)
    assert refused.value.message_dict == {"version": [
        "version 2 is rolled_back: an alias sends it no traffic; pin it with ?version=2, or move the production "
        "alias to it"
    ]}  # fmt: skip
    answer = api.post("/api/v1/models/cancer/aliases/", {"alias": "staging", "version": 2}, format="json")
    assert answer.status_code == 400 and "pin it with ?version=2" in answer.json()["version"][0]

    registry.alias_create(model=model, name="staging", version=production)
    registry.alias_move(model=model, name="production", version=challenger)  # rolled back -> production again
    assert statuses(model) == {1: "archived", 2: "production"}
    registry.alias_move(model=model, name="staging", version=challenger)
    answer = api.put("/api/v1/models/cancer/aliases/staging/", {"version": 1}, format="json")
    assert answer.status_code == 400 and "version 1 is archived" in answer.json()["version"][0]
    assert ModelAlias.objects.get(name="staging").version_id == challenger.pk


# --- Archive ---------------------------------------------------------------------------------------------------------


def test_archiving_an_arms_version_is_refused_and_the_arm_keeps_serving(api, caller, logreg, experiment, challenger):
    with pytest.raises(TrafficConflict) as refused:
        registry.model_version_archive(version=challenger)
    assert refused.value.field == "version"
    assert refused.value.message == (
        "experiment 'forest-vs-logreg' routes traffic to v2: conclude or stop experiment 'forest-vs-logreg' first"
    )
    answer = api.post("/api/v1/models/cancer/versions/2/archive/")
    assert answer.status_code == 409 and answer.json() == {"version": [refused.value.message]}
    assert ModelVersion.objects.get(pk=challenger.pk).status == VersionStatus.VALIDATED
    assert {version for version, _ in served(caller, logreg, range(40)).values()} == {1, 2}

    experiments.experiment_stop(experiment=experiment)
    assert registry.model_version_archive(version=challenger).status == VersionStatus.ARCHIVED


def test_archiving_a_rollouts_candidate_or_an_aliased_version_is_refused(api, rollout, challenger, production):
    answer = api.post("/api/v1/models/cancer/versions/2/archive/")
    assert answer.status_code == 409
    assert answer.json() == {"version": [f"rollout {rollout.pk} routes traffic to v2: promote or abort rollout "
                                         f"{rollout.pk} first"]}  # fmt: skip
    answer = api.post("/api/v1/models/cancer/versions/1/archive/")
    assert answer.status_code == 409 and answer.json() == {
        "version": ["aliases production point at this version: move them before archiving"]
    }
    assert statuses(production.model) == {1: "production", 2: "canary"}


# --- Rollback --------------------------------------------------------------------------------------------------------


def test_rollback_during_an_experiment_is_refused_naming_it(api, caller, logreg, experiment):
    message = (
        "cannot roll back cancer while experiment 'forest-vs-logreg' holds its traffic: "
        "stop or conclude experiment 'forest-vs-logreg' first"
    )
    with pytest.raises(TrafficConflict) as refused:
        rollouts.model_rollback(model=experiment.model)
    assert refused.value.message == message and refused.value.owner.kind == "experiment"

    answer = api.post("/api/v1/models/cancer/rollback/")
    assert answer.status_code == 409 and answer.json() == {"model": [message]}

    code, lines = refused_command("rollback", "cancer")
    assert code == 1 and lines == [f"model: {message}"]

    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.RUNNING
    assert statuses(experiment.model) == {1: "production", 2: "validated"}
    assert {version for version, _ in served(caller, logreg, range(40)).values()} == {1, 2}


def test_rollback_during_a_rollout_aborts_it_and_the_candidate_gets_no_traffic(api, caller, logreg, rollout):
    answer = api.post("/api/v1/models/cancer/rollback/")
    assert answer.status_code == 200 and answer.json() == {"taken_out": 2, "serving": 1}
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ABORTED
    assert statuses(rollout.model) == {1: "production", 2: "rolled_back"}
    assert set(served(caller, logreg, range(60)).values()) == {(1, "alias:production")}


def test_the_admin_shows_the_refusals_as_messages(client, staff, experiment, challenger):
    client.force_login(staff)
    shown = client.post("/admin/registry/modelversion/", {"action": "promote_to_production",
                        "_selected_action": [challenger.pk]}, follow=True).content.decode()  # fmt: skip
    assert "conclude or stop experiment &#x27;forest-vs-logreg&#x27; first" in shown
    shown = client.post("/admin/registry/modelversion/", {"action": "archive", "_selected_action": [challenger.pk]},
                        follow=True).content.decode()  # fmt: skip
    assert "experiment &#x27;forest-vs-logreg&#x27; routes traffic to v2" in shown
    shown = client.post("/admin/registry/registeredmodel/", {"action": "roll_back_production",
                        "_selected_action": [experiment.model_id]}, follow=True).content.decode()  # fmt: skip
    assert "stop or conclude experiment &#x27;forest-vs-logreg&#x27; first" in shown
    assert statuses(experiment.model) == {1: "production", 2: "validated"}


# --- Promoting and starting only what can be served ------------------------------------------------------------------


def tamper(version: ModelVersion) -> None:
    """Overwrite the stored artifact, then let the platform's own integrity check find it."""
    path = registry.artifact_storage().path(version.artifact_path)
    with open(path, "wb") as handle:
        handle.write(b"not what was registered")
    assert registry.model_version_verify_integrity(version=version) is False


def test_a_tampered_candidate_is_never_promoted(api, caller, logreg, production, challenger):
    rollout = rollouts.rollout_start(model=production.model, candidate=challenger, stages=[100])
    rollouts.tick()
    assert {version for version, _ in served(caller, logreg, range(120)).values()} == {2}  # a healthy last stage
    prediction_log().flush()
    tamper(challenger)

    with pytest.raises(ValidationError) as refused:
        rollouts.rollout_promote(rollout=rollout)
    assert refused.value.message_dict == {
        "version": [f"v2 is tampered (failed its integrity check) and cannot be promoted: abort rollout {rollout.pk}"]
    }
    assert api.post(f"/api/v1/rollouts/{rollout.pk}/promote/").status_code == 400

    # The beat's promotion after the last healthy stage refuses it too: the rollout is rolled back, not promoted.
    rollout.refresh_from_db()
    assert rollouts.tick(now=rollouts.stage_due_at(rollout)) == [{"rollout": rollout.pk, "step": "rolled_back"}]
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ROLLED_BACK
    assert rollout.reason == "v2 is tampered and can no longer be served: not promoted"
    assert ModelAlias.objects.get(name="production").version.version == 1
    assert statuses(production.model) == {1: "production", 2: "rolled_back"}


def test_an_arm_taken_out_of_traffic_before_the_start_is_refused(production, challenger):
    model = production.model
    draft = experiments.experiment_create(
        model=model, name="late-start", primary_metric={"kind": "quality"},
        arms=[{"name": "control", "version": 1, "weight": 1}, {"name": "forest", "version": 2, "weight": 1}],
    )  # fmt: skip
    registry.alias_move(model=model, name="production", version=challenger)
    rollouts.model_rollback(model=model)  # v2 rolled back, v1 production again
    with pytest.raises(ValidationError) as refused:
        experiments.experiment_start(experiment=draft)
    assert refused.value.message_dict == {
        "arms": ["arm forest: version 2 is rolled_back and can no longer get traffic"]
    }
    registry.model_version_set_status(version=challenger, status=VersionStatus.VALIDATED)
    registry.model_version_archive(version=challenger)
    with pytest.raises(ValidationError, match="arm forest: version 2 is archived"):
        experiments.experiment_start(experiment=draft)
    assert traffic_owner(model.pk) is None


def test_a_stopped_experiment_cannot_conclude_into_a_rollouts_traffic(api, experiment, challenger, forest):
    """Stopped, the experiment holds nothing, so a rollout may start; concluding it then would move production (or
    start a second rollout) under that rollout: refused, and the experiment stays stopped."""
    experiments.experiment_stop(experiment=experiment)
    third = registry.model_version_register(
        model=experiment.model, artifact=forest.artifact, metrics={"accuracy": 0.97, "f1": 0.99}
    )
    rollout = rollouts.rollout_start(model=experiment.model, candidate=third)
    with pytest.raises(TrafficConflict, match=f"promote or abort rollout {rollout.pk} first"):
        experiments.experiment_conclude(experiment=experiment, winner="forest")
    with pytest.raises(TrafficConflict, match=f"already has rollout {rollout.pk} running"):
        experiments.experiment_conclude(experiment=experiment, winner="forest", promote="rollout")
    answer = api.post("/api/v1/experiments/forest-vs-logreg/conclude/", {"winner": "forest"}, format="json")
    assert answer.status_code == 409 and f"promote or abort rollout {rollout.pk} first" in answer.json()["alias"][0]
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.STOPPED and experiment.winner is None
    assert ModelAlias.objects.get(name="production").version.version == 1
