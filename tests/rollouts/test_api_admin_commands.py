"""Rollouts as ML engineers (REST API, management commands) and data scientists (admin) use them."""

from __future__ import annotations

import time

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from registry.models import ModelVersion, VersionStatus
from rollouts import services as rollouts
from rollouts.models import Rollout, RolloutStatus
from serving.prediction_log import prediction_log
from tests.rollouts.conftest import Traffic, sample_rows
from tests.serving.conftest import make_key

pytestmark = pytest.mark.django_db


def test_start_inspect_and_steer_a_rollout_over_the_api(api, baseline, candidate, logreg):
    refused = api.post("/api/v1/models/cancer/rollouts/", {"version": 2, "stages": [50, 10, 100]}, format="json")
    assert refused.status_code == 400 and "stages" in refused.json()
    missing = api.post("/api/v1/models/cancer/rollouts/", {"version": 9}, format="json")
    assert missing.status_code == 400 and "no version 9" in missing.json()["version"][0]

    started = api.post("/api/v1/models/cancer/rollouts/", {"version": 2, "stage_seconds": 60}, format="json")
    assert started.status_code == 201, started.json()
    body = started.json()
    assert (body["status"], body["candidate"], body["baseline"], body["stages"]) == ("pending", 2, 1, [10, 25, 50, 100])
    assert body["events"][0]["action"] == "created"
    again = api.post("/api/v1/models/cancer/rollouts/", {"version": 2}, format="json")
    assert again.status_code == 409 and "already has rollout" in again.json()["model"][0]  # a state conflict

    rollouts.tick()
    Traffic().send(sample_rows(logreg), count=100)
    prediction_log().flush()
    detail = api.get(f"/api/v1/rollouts/{body['id']}/").json()
    live = detail["live"]
    assert live["baseline"]["requests"] + live["candidate"]["requests"] == 100
    assert live["target_candidate_percent"] == 10

    assert api.post(f"/api/v1/rollouts/{body['id']}/pause/").json()["status"] == "paused"
    assert api.post(f"/api/v1/rollouts/{body['id']}/pause/").status_code == 400
    assert api.post(f"/api/v1/rollouts/{body['id']}/resume/").json()["status"] == "running"
    assert api.post(f"/api/v1/rollouts/{body['id']}/promote/").json()["status"] == "promoted"
    assert [r["id"] for r in api.get("/api/v1/models/cancer/rollouts/").json()["results"]] == [body["id"]]

    rolled = api.post("/api/v1/models/cancer/rollback/")
    assert rolled.status_code == 200 and rolled.json() == {"taken_out": 2, "serving": 1}


def test_the_rollout_api_needs_registry_and_deploy_scopes(baseline, candidate):
    reader = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('registry:read')}")
    assert reader.get("/api/v1/models/cancer/rollouts/").status_code == 200
    assert reader.post("/api/v1/models/cancer/rollouts/", {"version": 2}).status_code == 403
    assert Client().get("/api/v1/models/cancer/rollouts/").status_code in (401, 403)
    writer = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('registry:write', 'registry:read')}")
    refused = writer.post("/api/v1/models/cancer/rollouts/", {"version": 2}, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["missing_permission"] == "deploy:cancer"  # moves traffic
    deployer = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('deploy:cancer', 'registry:read')}")
    created = deployer.post("/api/v1/models/cancer/rollouts/", {"version": 2}, content_type="application/json")
    assert created.status_code == 201


def test_rollout_and_rollback_commands(baseline, candidate, capsys):
    call_command("rollout", "start", "cancer", "2", "--stages", "20,100", "--stage-seconds", "30")
    assert f"rollout {Rollout.objects.get().pk}: v2 vs v1, pending, stage 1/2" in capsys.readouterr().out
    with pytest.raises(CommandError, match="already has rollout"):
        call_command("rollout", "start", "cancer", "2")
    with pytest.raises(CommandError, match="--stages: expected percentages"):
        call_command("rollout", "start", "cancer", "2", "--stages", "ten")
    call_command("rollout", "pause", "cancer")
    assert "paused" in capsys.readouterr().out
    call_command("rollout", "promote", "cancer")
    assert Rollout.objects.get().status == RolloutStatus.PROMOTED
    with pytest.raises(CommandError, match="has no active rollout"):
        call_command("rollout", "abort", "cancer")

    started = time.perf_counter()
    call_command("rollback", "cancer")
    assert time.perf_counter() - started < 1.0  # the "under a second of wall time", with room to spare
    assert "v1 serves production again, v2 is rolled back" in capsys.readouterr().out
    assert ModelVersion.objects.get(pk=candidate.pk).status == VersionStatus.ROLLED_BACK
    with pytest.raises(CommandError, match="no model named 'nope'"):
        call_command("rollback", "nope")


def test_the_admin_starts_shows_and_steers_a_rollout(client, staff, baseline, candidate, logreg):
    client.force_login(staff)
    page = client.get("/admin/rollouts/rollout/add/", follow=True)
    assert b"Start a rollout" in page.content
    # Only validated versions are offered: the production version is not a candidate.
    offered = page.context["form"].fields["candidate"].queryset
    assert list(offered) == [candidate]
    assert f'<option value="{candidate.pk}">cancer v2</option>' in page.content.decode()
    refused = client.post("/admin/rollouts/rollout/start/", {"candidate": baseline.pk, "mode": "canary",
                          "stages": "10,25,50,100", "stage_seconds": 60, "shadow_percent": 0})  # fmt: skip
    assert b"Select a valid choice" in refused.content
    bad_threshold = client.post("/admin/rollouts/rollout/start/", {
        "candidate": candidate.pk, "mode": "canary", "stages": "10,100", "stage_seconds": 60, "shadow_percent": 0,
        "analysis_2": "-1"})  # fmt: skip
    assert b"must be non-negative numbers: max_error_rate" in bad_threshold.content
    assert not Rollout.objects.exists()
    started = client.post("/admin/rollouts/rollout/start/", {"candidate": candidate.pk, "mode": "canary",
                          "stages": "10,50,100", "stage_seconds": 60, "shadow_percent": 0,
                          "analysis_0": "50"})  # fmt: skip
    rollout = Rollout.objects.get()
    assert started.status_code == 302 and started["Location"].endswith(f"/rollouts/rollout/{rollout.pk}/change/")
    assert rollout.analysis == {"min_requests": 50.0}
    rollouts.tick()
    Traffic().send(sample_rows(logreg), count=50)
    prediction_log().flush()

    detail = client.get(f"/admin/rollouts/rollout/{rollout.pk}/change/").content.decode()
    assert ">10%</div>" in detail and ">50%</div>" in detail  # the stage bar
    assert "90% v1 / 10% v2" in detail  # the live split
    assert "stage.started" in detail and "created" in detail  # the timeline
    assert "Promote now" in detail

    client.post(f"/admin/rollouts/rollout/{rollout.pk}/control/abort/")
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.ABORTED
    listing = client.get("/admin/rollouts/rollout/").content.decode()
    assert "aborted" in listing


def test_the_admin_rolls_back_a_model(client, staff, baseline, candidate):
    from registry import services as registry

    registry.alias_move(model=baseline.model, name="production", version=candidate)
    client.force_login(staff)
    client.post("/admin/registry/registeredmodel/", {"action": "roll_back_production",
                                                      "_selected_action": [baseline.model_id]})  # fmt: skip
    assert baseline.model.aliases.get(name="production").version_id == baseline.pk
