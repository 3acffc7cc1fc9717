"""One resolution per request: native predictions and V2 inference are routed, fallen back, logged and counted
the same way (issue 14), so rollouts and experiments see both protocols alike; and the router serves by status."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from experiments import exposures
from experiments import services as experiments
from registry import services as registry
from registry.models import ModelVersion, VersionStatus
from rollouts import analysis as rollout_analysis
from rollouts import services as rollouts
from rollouts.models import Rollout
from serving import routing
from serving.models import Outcome, RouteReason, ServingPolicy
from serving.prediction_log import prediction_log
from tests.serving.conftest import post, rows_of

pytestmark = pytest.mark.django_db
NATIVE = "/api/v1/models/cancer/predict"
V2 = "/v2/models/cancer/infer"


def v2_body(rows: list[dict], key: str | int | None = None, request_id: str | None = None) -> dict:
    """One FP64 tensor per feature, as Triton's client sends them."""
    body: dict = {"inputs": [{"name": name, "shape": [len(rows)], "datatype": "FP64", "data": [r[name] for r in rows]}
                             for name in rows[0]]}  # fmt: skip
    if key is not None:
        body["parameters"] = {"key": key}
    if request_id is not None:
        body["id"] = request_id
    return body


def send(caller: Client, protocol: str, rows: list[dict], key: str | None, request_id: str) -> tuple[int, dict]:
    """(status, answer) of one prediction through the protocol's Django view; the answer's version and route are
    read alike from both (V2 reports the route in the answer's parameters)."""
    if protocol == "native":
        body = {"instances": rows} | ({"key": key} if key is not None else {})
        response = caller.post(NATIVE, json.dumps(body), content_type="application/json", HTTP_X_REQUEST_ID=request_id)
        answer = response.json()
        return response.status_code, answer if response.status_code != 200 else {
            "version": answer["version"], "route": answer["route"], "predictions": answer["predictions"]}  # fmt: skip
    response = caller.post(V2, json.dumps(v2_body(rows, key, request_id)), content_type="application/json")
    answer = response.json()
    if response.status_code != 200:
        return response.status_code, answer
    predictions = next(o["data"] for o in answer["outputs"] if o["name"] == "predict")
    return 200, {"version": int(answer["model_version"]), "route": answer["parameters"]["route"],
                 "predictions": predictions}  # fmt: skip


def logged(request_id: str):
    return next(entry for entry in prediction_log()._rows if entry.request_id == request_id)


def run_out(rollout: Rollout) -> None:
    """The stage's clock running out, without the waiting."""
    rollout.refresh_from_db()
    elapsed = rollouts.stage_due_at(rollout) - rollout.stage_started_at + timedelta(milliseconds=1)
    Rollout.objects.filter(pk=rollout.pk).update(stage_started_at=rollout.stage_started_at - elapsed)


# ------------------------------------------------------------------------------------------- under a canary rollout


@pytest.fixture
def canary(production, classifier_model, logreg):
    """A healthy candidate (v2) at the 50% stage of a canary rollout against production v1."""
    candidate = registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    rollout = rollouts.rollout_start(model=classifier_model, candidate=candidate, stages=[50, 100], stage_seconds=60)
    assert rollouts.tick() == [{"rollout": rollout.pk, "step": "started"}]
    routing.clear_cache()
    return rollout


def test_v2_requests_under_a_canary_split_like_native_ones_and_each_key_takes_the_same_arm_in_both(
    canary, caller, logreg
):
    rows = rows_of(logreg.X_test, 1)
    arms = {
        RouteReason.arm(f"rollout:{canary.pk}", "baseline"): 1,
        RouteReason.arm(f"rollout:{canary.pk}", "candidate"): 2,
    }
    keys = [f"user-{i}" for i in range(200)]
    seen = {}
    for key in keys:
        for protocol in ("v2", "native"):
            status, answer = send(caller, protocol, rows, key, f"{protocol}-{key}")
            assert status == 200, answer
            entry = logged(f"{protocol}-{key}")
            assert entry.route_reason == answer["route"] and entry.route_reason in arms
            assert (entry.routing_key, entry.outcome, entry.version) == (key, Outcome.OK, arms[entry.route_reason])
            assert answer["version"] == entry.version
            seen[protocol, key] = entry.route_reason
    assert all(seen["v2", key] == seen["native", key] for key in keys)  # sticky across protocols
    on_candidate = sum(seen["v2", key].endswith(":candidate") for key in keys)
    assert 60 <= on_candidate <= 140  # about half: the 50% stage
    assert not any(entry.route_reason == RouteReason.PINNED for entry in prediction_log()._rows)


def test_v2_keyless_requests_are_split_too_and_a_bad_key_is_a_400(canary, caller, logreg):
    rows = rows_of(logreg.X_test, 1)
    reasons = set()
    for i in range(40):
        assert send(caller, "v2", rows, None, f"keyless-{i}")[0] == 200
        entry = logged(f"keyless-{i}")
        assert entry.routing_key == ""
        reasons.add(entry.route_reason)
    assert reasons == {f"rollout:{canary.pk}:baseline", f"rollout:{canary.pk}:candidate"}
    assert send(caller, "v2", rows, 12345, "int-key")[0] == 200 and logged("int-key").routing_key == "12345"
    for bad in ["x" * 201, "nul\x00", "\ud800", True, 1.5, ["a"], {"k": 1}]:
        body = v2_body(rows) | {"parameters": {"key": bad}}
        response = caller.post(V2, json.dumps(body), content_type="application/json")
        assert response.status_code == 400, bad
        assert response.json()["error"].startswith("parameters.key: ")


@pytest.fixture
def failing_canary(classifier_model, forest, logreg):
    """v1 (a forest, which takes missing values) is production; v2 (a logistic regression, which cannot) is the
    candidate at its 50% stage. Every feature is declared nullable, so a missing value passes validation and makes
    every call of the candidate fail."""
    signature = {"inputs": [{"name": c, "dtype": "float", "nullable": True} for c in logreg.X_test.columns]}
    v1 = registry.model_version_register(
        model=classifier_model, artifact=forest.artifact, signature=signature, evaluation_data=forest.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=v1)
    v2 = registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, signature=signature, evaluation_data=logreg.eval_csv
    )
    ServingPolicy.objects.create(
        model=classifier_model, breaker_consecutive_failures=10_000, breaker_min_requests=10_000
    )
    rollout = rollouts.rollout_start(model=classifier_model, candidate=v2, stages=[50, 100], stage_seconds=60,
                                     analysis={"min_requests": 30})  # fmt: skip
    rollouts.tick()
    routing.clear_cache()
    return rollout


@pytest.mark.parametrize("protocol", ["v2", "native"])
def test_a_failing_candidate_falls_back_to_the_baseline_and_the_analysis_counts_it(
    protocol, failing_canary, caller, forest, logreg
):
    rows = [row | {"mean radius": math.nan} for row in rows_of(logreg.X_test, 150)]
    since = timezone.now()
    served = []
    for i, row in enumerate(rows):
        status, answer = send(caller, protocol, [row], f"user-{i}", f"{protocol}-{i}")
        assert status == 200, answer  # never a 503: the baseline answers for the failing candidate
        entry = logged(f"{protocol}-{i}")
        assert answer["version"] == entry.version == 1
        if entry.route_reason.endswith(":candidate"):
            assert answer["route"] == RouteReason.fallback("inference failed: ValueError")
            assert entry.outcome == Outcome.FALLBACK
        else:
            assert answer["route"] == entry.route_reason and entry.outcome == Outcome.OK
        served.append(answer["predictions"][0])
    assert served == forest.estimator.predict(logreg.X_test.head(150).assign(**{"mean radius": math.nan})).tolist()
    prediction_log().flush()
    figures = rollout_analysis.arm_figures(failing_canary, "candidate", since, timezone.now())
    assert figures["requests"] >= 30 and figures["errors"] == figures["requests"]
    assert rollout_analysis.arm_figures(failing_canary, "baseline", since, timezone.now())["errors"] == 0
    routing.clear_cache()
    run_out(failing_canary)
    assert rollouts.tick()[0]["step"] == "rolled_back"  # a candidate that fails only V2 clients is not promoted
    assert ModelVersion.objects.get(pk=failing_canary.candidate_id).status == VersionStatus.ROLLED_BACK


@pytest.mark.parametrize("protocol", ["v2", "native"])
def test_a_candidate_whose_artifact_fails_to_load_falls_back_to_the_baseline(
    protocol, canary, caller, logreg, artifact_root
):
    candidate = ModelVersion.objects.get(pk=canary.candidate_id)
    (artifact_root / candidate.artifact_path).write_bytes(b"tampered")
    rows = rows_of(logreg.X_test, 1)
    reasons = set()
    for i in range(40):
        status, answer = send(caller, protocol, rows, f"user-{i}", f"{protocol}-{i}")
        assert status == 200, answer
        entry = logged(f"{protocol}-{i}")
        assert answer["version"] == entry.version == 1
        reasons.add(entry.route_reason)
        if entry.route_reason.endswith(":candidate"):
            assert entry.outcome == Outcome.FALLBACK
            # Failing to load marks it tampered: first the load's failure, then (the route re-read) the router's.
            assert answer["route"].startswith(RouteReason.fallback("cancer v2 "))
            assert "cannot be loaded" in answer["route"] or "tampered" in answer["route"]
        else:
            assert entry.outcome == Outcome.OK
    assert reasons == {f"rollout:{canary.pk}:baseline", f"rollout:{canary.pk}:candidate"}
    # A pin of the tampered version is the caller's conflict, not a fallback.
    response = post(caller, f"{NATIVE}?version=2", {"instances": rows})
    assert response.status_code == 409 and "tampered" in response.json()["detail"]


# ------------------------------------------------------------------------------------------------ during an experiment


@pytest.fixture(autouse=True)
def fresh_exposures(monkeypatch):
    """An exposure buffer of the test's own that flushes only when told (not the process's, whose thread would
    write after the test)."""
    buffer = exposures.ExposureBuffer(flush_seconds=3600, max_rows=100_000)
    monkeypatch.setattr(exposures.exposure_buffer, "_value", buffer)
    return buffer


@pytest.fixture
def experiment(production, classifier_model, forest, staff):
    registry.model_version_register(model=classifier_model, artifact=forest.artifact,
                                    metrics={"accuracy": 0.97, "f1": 0.99})  # fmt: skip
    experiment = experiments.experiment_create(
        model=classifier_model,
        name="forest-vs-logreg",
        arms=[{"name": "control", "version": 1, "weight": 50}, {"name": "forest", "version": 2, "weight": 50}],
        primary_metric={"kind": "conversion", "event": "purchase"},
        guardrail_metrics=[{"kind": "quality"}],
        salt="fixed-salt",
        actor=staff,
    )
    experiment = experiments.experiment_start(experiment=experiment, actor=staff)
    routing.clear_cache()
    return experiment


@pytest.mark.parametrize("protocol", ["v2", "native"])
def test_a_prediction_during_an_experiment_records_an_exposure_for_its_key(
    protocol, experiment, fresh_exposures, caller, logreg
):
    rows = rows_of(logreg.X_test, 1)
    for i in range(20):
        assert send(caller, protocol, rows, f"alice-{i}", f"{protocol}-{i}")[0] == 200
    pending = dict(fresh_exposures._pending)
    assert {key for _, key in pending} == {f"alice-{i}" for i in range(20)}
    for i in range(20):
        arm = pending[(experiment.pk, f"alice-{i}")][0]
        assert logged(f"{protocol}-{i}").route_reason == RouteReason.arm(f"experiment:{experiment.pk}", arm)


def test_v2_metadata_and_readiness_record_no_exposure(experiment, fresh_exposures, caller, logreg, monkeypatch):
    told = []
    original = fresh_exposures.record
    monkeypatch.setattr(fresh_exposures, "record", lambda *args: (told.append(args), original(*args)))
    routing.clear_cache()  # the split's on_route is bound when the route is read
    for path in ("/v2/models/cancer", "/v2/models/cancer/ready"):
        assert caller.get(path).status_code == 200
    assert told == []
    assert send(caller, "v2", rows_of(logreg.X_test, 1), "carol", "v2-carol")[0] == 200
    assert [args[-1] for args in told] == ["carol"]  # an inference is routed through the split, and told


def test_an_experiment_arm_out_of_traffic_is_answered_by_the_control(experiment, caller, logreg):
    ModelVersion.objects.filter(version=2).update(status=VersionStatus.ARCHIVED)  # however it came to be
    routing.clear_cache()
    rows = rows_of(logreg.X_test, 1)
    for i in range(40):
        status, answer = send(caller, "native", rows, f"bob-{i}", f"arm-{i}")
        assert status == 200 and answer["version"] == 1
        entry = logged(f"arm-{i}")
        if entry.route_reason.endswith(":forest"):
            assert entry.outcome == Outcome.FALLBACK and "archived" in answer["route"]


# --------------------------------------------------------------------------------------------- routing by status


@pytest.fixture
def two_versions(production, classifier_model, logreg):
    second = registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    registry.alias_create(model=classifier_model, name="staging", version=second)
    return production, second


@pytest.mark.parametrize("status", [VersionStatus.ARCHIVED, VersionStatus.ROLLED_BACK])
def test_a_version_out_of_traffic_is_served_only_to_an_explicit_pin(status, two_versions, caller, logreg):
    _, second = two_versions
    ModelVersion.objects.filter(pk=second.pk).update(status=status)  # an alias left on it, however it came to be
    routing.clear_cache()
    rows = {"instances": rows_of(logreg.X_test, 1)}
    refused = post(caller, f"{NATIVE}?alias=staging", rows)
    assert refused.status_code == 503 and "out of traffic" in refused.json()["detail"]
    pinned = post(caller, f"{NATIVE}?version=2", rows, HTTP_X_REQUEST_ID="pin-native")
    assert pinned.status_code == 200 and (pinned.json()["version"], pinned.json()["route"]) == (2, "pinned")
    v2 = caller.post("/v2/models/cancer/versions/2/infer", json.dumps(v2_body(rows["instances"], request_id="pin-v2")),
                     content_type="application/json")  # fmt: skip
    assert v2.status_code == 200 and v2.json()["model_version"] == "2"
    assert [logged(r).route_reason for r in ("pin-native", "pin-v2")] == [RouteReason.PINNED] * 2
    # Back in traffic: the alias serves it again.
    ModelVersion.objects.filter(pk=second.pk).update(status=VersionStatus.VALIDATED)
    routing.clear_cache()
    assert post(caller, f"{NATIVE}?alias=staging", rows).status_code == 200


def test_production_on_an_archived_version_answers_503_by_default_and_the_pin_still_serves(production, caller, logreg):
    ModelVersion.objects.filter(pk=production.pk).update(status=VersionStatus.ARCHIVED)
    routing.clear_cache()
    rows = {"instances": rows_of(logreg.X_test, 1)}
    for response in (post(caller, NATIVE, rows), caller.post(V2, json.dumps(v2_body(rows["instances"])),
                                                             content_type="application/json")):  # fmt: skip
        assert response.status_code == 503 and response.has_header("Retry-After")
    assert post(caller, f"{NATIVE}?version=1", rows).status_code == 200


@pytest.mark.parametrize("how", ["rejected", "tampered"])
def test_a_pin_of_a_rejected_or_tampered_version_is_refused_with_409(how, two_versions, caller, logreg):
    _, second = two_versions
    if how == "rejected":
        ModelVersion.objects.filter(pk=second.pk).update(status=VersionStatus.REJECTED)
    else:
        ModelVersion.objects.filter(pk=second.pk).update(integrity_failed_at=timezone.now())
    routing.clear_cache()
    rows = rows_of(logreg.X_test, 1)
    native = post(caller, f"{NATIVE}?version=2", {"instances": rows})
    assert native.status_code == 409 and how in native.json()["detail"]
    v2 = caller.post("/v2/models/cancer/versions/2/infer", json.dumps(v2_body(rows)), content_type="application/json")
    assert v2.status_code == 409 and how in v2.json()["error"]
    assert post(caller, f"{NATIVE}?alias=staging", {"instances": rows}).status_code == 503


def test_the_breaker_falls_back_to_the_archived_previous_production_but_never_to_a_rolled_back_one(
    classifier_model, forest, logreg, caller
):
    signature = {"inputs": [{"name": c, "dtype": "float", "nullable": True} for c in logreg.X_test.columns]}
    v1 = registry.model_version_register(model=classifier_model, artifact=forest.artifact, signature=signature,
                                         evaluation_data=forest.eval_csv)  # fmt: skip
    registry.alias_create(model=classifier_model, name="production", version=v1)
    v2 = registry.model_version_register(model=classifier_model, artifact=logreg.artifact, signature=signature,
                                         evaluation_data=logreg.eval_csv)  # fmt: skip
    registry.alias_move(model=classifier_model, name="production", version=v2)
    assert ModelVersion.objects.get(pk=v1.pk).status == VersionStatus.ARCHIVED
    routing.clear_cache()
    row = rows_of(logreg.X_test, 1)[0] | {"mean radius": None}  # the logistic regression fails on it
    answer = post(caller, NATIVE, {"instances": [row]}).json()
    assert (answer["version"], answer["route"]) == (1, RouteReason.fallback("inference failed: ValueError"))
    ModelVersion.objects.filter(pk=v1.pk).update(status=VersionStatus.ROLLED_BACK)
    routing.clear_cache()
    failed = post(caller, NATIVE, {"instances": [row]})
    assert failed.status_code == 503 and "no fallback version" in failed.json()["detail"]
