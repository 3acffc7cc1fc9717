"""An experiment's life through its services and the real prediction endpoint: start, route, expose, stop, conclude."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from experiments import services
from experiments.models import ExperimentEvent, ExperimentStatus, Exposure
from registry.models import ModelAlias, RegistryEvent
from rollouts import services as rollouts
from rollouts.models import ACTIVE_ROLLOUT_STATUSES, Rollout
from serving import routing, traffic
from tests.serving.conftest import post, rows_of

pytestmark = pytest.mark.django_db
URL = "/api/v1/models/cancer/predict"


def predict(caller, logreg, key=None):
    body = {"instances": rows_of(logreg.X_test, 1)}
    if key is not None:
        body["key"] = key
    response = post(caller, URL, body)
    assert response.status_code == 200, response.content
    return response.json()


def test_a_draft_experiment_does_not_touch_traffic(caller, logreg, experiment):
    assert experiment.status == ExperimentStatus.DRAFT
    assert {predict(caller, logreg, f"u{i}")["version"] for i in range(20)} == {1}


def test_a_running_experiment_splits_traffic_by_key_and_logs_each_first_exposure_once(
    caller, logreg, experiment, fresh_exposures
):
    services.experiment_start(experiment=experiment)
    split = traffic.active_split(experiment.model_id)
    seen = {}
    for i in range(60):
        answer = predict(caller, logreg, f"user-{i % 30}")  # every key twice
        arm = split.arm_for(f"user-{i % 30}")
        assert answer["route"] == f"experiment:{experiment.pk}:{arm.name}"
        assert answer["version"] == (1 if arm.name == "control" else 2)
        seen[f"user-{i % 30}"] = arm.name
    assert set(seen.values()) == {"control", "forest"}
    assert all(predict(caller, logreg)["version"] == 1 for _ in range(10)), "keyless requests go to control"
    assert fresh_exposures.flush() == 30
    stored = dict(Exposure.objects.filter(experiment=experiment).values_list("key", "arm"))
    assert stored == seen


def test_keyless_requests_can_be_split_at_random_instead(caller, logreg, production, challenger, fresh_exposures):
    experiment = services.experiment_create(
        model=production.model, name="random-keyless", primary_metric={"kind": "quality"}, keyless_to_control=False,
        arms=[{"name": "a", "version": 1, "weight": 1}, {"name": "b", "version": 2, "weight": 1}],
    )  # fmt: skip
    services.experiment_start(experiment=experiment)
    assert {predict(caller, logreg)["version"] for _ in range(40)} == {1, 2}
    assert fresh_exposures.flush() == 0, "keyless requests are no exposure of a key"


def test_a_second_experiment_on_the_same_model_cannot_start(experiment, production, challenger):
    services.experiment_start(experiment=experiment)
    other = services.experiment_create(
        model=production.model, name="second", primary_metric={"kind": "quality"},
        arms=[{"name": "a", "version": 1, "weight": 1}, {"name": "b", "version": 2, "weight": 1}],
    )  # fmt: skip
    with pytest.raises(ValidationError) as error:
        services.experiment_start(experiment=other)
    assert "already has experiment 'forest-vs-logreg' running" in str(error.value.message_dict["status"])
    services.experiment_stop(experiment=experiment)
    assert services.experiment_start(experiment=other).status == ExperimentStatus.RUNNING


def test_experiments_and_rollouts_exclude_each_other(experiment, production, forest):
    third = services.registry.model_version_register(
        model=production.model, artifact=forest.artifact, metrics={"accuracy": 0.97, "f1": 0.99}
    )
    rollout = rollouts.rollout_start(model=production.model, candidate=third)
    with pytest.raises(ValidationError) as error:
        services.experiment_start(experiment=experiment)
    assert "cannot start experiment 'forest-vs-logreg': cancer already has rollout" in str(error.value)
    assert not ExperimentEvent.objects.filter(action="experiment.started").exists()

    rollouts.rollout_abort(rollout=rollout)
    services.experiment_start(experiment=experiment)
    with pytest.raises(ValidationError, match="cancer already has experiment 'forest-vs-logreg' running"):
        rollouts.rollout_start(model=production.model, candidate=third)


def test_concluding_through_a_rollout_hands_the_model_to_a_staged_rollout_of_the_winner(experiment, staff):
    services.experiment_start(experiment=experiment)
    services.experiment_conclude(experiment=experiment, winner="forest", promote="rollout", actor=staff)
    rollout = Rollout.objects.get(model=experiment.model)
    assert rollout.candidate.version == 2 and rollout.status in ACTIVE_ROLLOUT_STATUSES
    assert ModelAlias.objects.get(model=experiment.model, name="production").version.version == 1, "not yet"
    history = ExperimentEvent.objects.get(experiment=experiment, action="experiment.concluded")
    assert history.after["promote"] == "rollout" and history.after["rollout"] == rollout.pk


def test_stopping_sends_traffic_back_to_production(caller, logreg, experiment):
    services.experiment_start(experiment=experiment)
    assert {predict(caller, logreg, f"k{i}")["version"] for i in range(30)} == {1, 2}
    services.experiment_stop(experiment=experiment)
    routing.clear_cache()  # another process would follow within MODELWORKS_ROUTE_TTL_MS
    assert {predict(caller, logreg, f"k{i}")["version"] for i in range(30)} == {1}


def test_concluding_promotes_the_winner_in_the_registry_with_an_event(caller, logreg, experiment, staff):
    services.experiment_start(experiment=experiment)
    concluded = services.experiment_conclude(experiment=experiment, winner="forest", actor=staff, message="+3% conv")
    assert concluded.status == ExperimentStatus.CONCLUDED and concluded.winner.name == "forest"
    assert ModelAlias.objects.get(model=experiment.model, name="production").version.version == 2
    moved = RegistryEvent.objects.get(model=experiment.model, action="alias.moved")
    assert (moved.before, moved.after, moved.actor_name) == (
        {"alias": "production", "version": 1},
        {"alias": "production", "version": 2},
        "grace",
    )
    history = ExperimentEvent.objects.get(experiment=experiment, action="experiment.concluded")
    assert history.after == {"status": "concluded", "winner": "forest", "version": 2, "promote": "direct"}
    assert history.message == "+3% conv"
    routing.clear_cache()
    assert {predict(caller, logreg, f"k{i}")["version"] for i in range(20)} == {2}


def test_concluding_for_the_control_keeps_production(experiment):
    services.experiment_start(experiment=experiment)
    services.experiment_conclude(experiment=experiment, winner="control", promote="rollout")
    assert ModelAlias.objects.get(model=experiment.model, name="production").version.version == 1
    assert not RegistryEvent.objects.filter(action="alias.moved").exists() and not Rollout.objects.exists()


def test_a_failed_conclusion_changes_nothing(experiment):
    with pytest.raises(ValidationError, match="run it before concluding"):
        services.experiment_conclude(experiment=experiment, winner="forest")
    services.experiment_start(experiment=experiment)
    with pytest.raises(ValidationError) as error:
        services.experiment_conclude(experiment=experiment, winner="nobody")
    assert error.value.message_dict == {"winner": ["no arm named 'nobody' (arms: control, forest)"]}
    experiment.refresh_from_db()
    assert experiment.status == ExperimentStatus.RUNNING and experiment.winner is None


def test_changing_weights_of_a_running_experiment_moves_only_the_keys_it_must(caller, logreg, experiment):
    services.experiment_start(experiment=experiment)
    before = {f"k{i}": predict(caller, logreg, f"k{i}")["route"] for i in range(200)}
    services.experiment_set_weights(experiment=experiment, weights={"control": 80, "forest": 20})
    routing.clear_cache()
    after = {k: predict(caller, logreg, k)["route"] for k in before}
    control, forest = f"experiment:{experiment.pk}:control", f"experiment:{experiment.pk}:forest"
    assert all(after[k] == control for k, route in before.items() if route == control), "control only grew"
    assert any(after[k] == control for k, route in before.items() if route == forest)
    arms = {arm.name: (arm.weight, arm.ranges) for arm in experiment.arms.all()}
    assert arms == {"control": (80, [[0, 5000], [7000, 10000]]), "forest": (20, [[5000, 7000]])}  # top edge freed
    experiment.refresh_from_db()
    assert experiment.allocation_changed_at > experiment.started_at
    assert ExperimentEvent.objects.filter(experiment=experiment, action="experiment.weights_changed").exists()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"arms": [{"name": "control", "version": 1, "weight": 1}]}, "arms", "at least two arms"),
        ({"arms": [{"name": "a", "version": 1, "weight": 1}, {"name": "b", "version": 9, "weight": 1}]}, "arms",
         "has no version 9"),
        ({"arms": [{"name": "a", "version": 1, "weight": 0}, {"name": "b", "version": 2, "weight": 1}]}, "arms",
         "integer from 1 to 1000000"),
        ({"arms": [{"name": "a", "version": 1, "weight": 1}, {"name": "a", "version": 2, "weight": 1}]}, "arms",
         "names must differ"),
        ({"arms": [{"name": "a", "version": 1, "weight": 1}, {"name": "b", "version": 1, "weight": 1}]}, "arms",
         "its own version"),
        ({"arms": [{"name": "A B", "version": 1, "weight": 1}, {"name": "b", "version": 2, "weight": 1}]}, "arms",
         "lowercase"),
        ({"primary_metric": {"kind": "revenue"}}, "primary_metric", "kind must be one of"),
        ({"primary_metric": {"kind": "conversion"}}, "primary_metric", "names its business event"),
        ({"guardrail_metrics": [{"kind": "quality", "event": "x"}]}, "guardrail_metrics", "has no event"),
        ({"name": "forest-vs-logreg"}, "name", "already exists"),
        ({"name": "not a slug"}, "name", "slug"),
        ({"power": 1.5}, "power", "less than or equal to 0.999"),
    ],
)  # fmt: skip
def test_bad_experiments_are_refused_with_the_field_and_store_nothing(experiment, production, changes, field, message):
    arguments = {
        "model": production.model, "name": "new", "primary_metric": {"kind": "quality"},
        "arms": [{"name": "a", "version": 1, "weight": 1}, {"name": "b", "version": 2, "weight": 1}], **changes,
    }  # fmt: skip
    with pytest.raises(ValidationError) as error:
        services.experiment_create(**arguments)
    assert message in " ".join(error.value.message_dict[field])
    assert list(experiment.model.experiments.values_list("name", flat=True)) == ["forest-vs-logreg"]


def test_a_version_that_failed_its_gates_cannot_join(production, classifier_model, forest):
    rejected = services.registry.model_version_register(model=classifier_model, artifact=forest.artifact)
    assert rejected.status == "rejected"
    with pytest.raises(ValidationError, match="version 2 is rejected: only validated versions"):
        services.experiment_create(
            model=production.model, name="x", primary_metric={"kind": "quality"},
            arms=[{"name": "a", "version": 1, "weight": 1}, {"name": "b", "version": 2, "weight": 1}],
        )  # fmt: skip
