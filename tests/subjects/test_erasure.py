"""Subject erasure and export (registry/subjects.py): every store, one subject, nothing of it left, others intact."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from experiments.models import Exposure
from features import online
from features.models import FeatureValue
from features.online import RedisOnlineStore
from monitoring.models import BusinessEvent, Feedback
from registry import permissions
from serving.models import DeadLetter, Outcome, PredictionLog
from serving.shadow import shadow_request_id
from serving.tokens import user_token_create
from tests.subjects.conftest import redis_fields_holding, tables_holding

pytestmark = pytest.mark.django_db(transaction=True)  # shadow copies are scored on their own thread

ALICE, BOB = "subject-alice", "subject-bob"


def run(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def counts_for(key: str, request_ids: list[str]) -> dict[str, int]:
    """One query per store's table: the rows held for the subject."""
    shadows = [shadow_request_id(r) for r in request_ids]
    return {
        "predictions": PredictionLog.objects.filter(routing_key=key).count(),
        "shadows": PredictionLog.objects.filter(request_id__in=shadows, outcome__in=Outcome.shadows()).count(),
        "feedback": Feedback.objects.filter(request_id__in=request_ids).count()
        + Feedback.objects.filter(routing_key=key, request_id__isnull=True).count(),
        "events": BusinessEvent.objects.filter(key=key).count(),
        "exposures": Exposure.objects.filter(key=key).count(),
        "offline": FeatureValue.objects.filter(entity_key=key).count(),
        "online": len(redis_fields_holding(key)),
        "dead_letters": DeadLetter.objects.filter(payload__contains=key).count(),
    }


def test_erase_subject_leaves_nothing_of_the_key_in_any_store_and_keeps_everyone_else(everywhere):
    bob_before = counts_for(BOB, everywhere.request_ids[BOB])
    alice = counts_for(ALICE, everywhere.request_ids[ALICE])
    # 6 predictions (3 per model), 3 shadow copies, feedback by id and by key (joined to a "second" prediction).
    assert alice == {"predictions": 6, "shadows": 3, "feedback": 2, "events": 1, "exposures": 1, "offline": 1,
                     "online": 1, "dead_letters": 1}  # fmt: skip
    assert tables_holding(ALICE) and redis_fields_holding(ALICE)

    dry = run("erase_subject", ALICE, "--dry-run")
    assert "would erase 16 rows" in dry and "serving_predictionlog\t6" in dry and "redis\t1" in dry
    assert counts_for(ALICE, everywhere.request_ids[ALICE]) == alice  # nothing deleted

    out = run("erase_subject", ALICE)
    lines = dict(line.rsplit("\t", 1) for line in out.splitlines() if "\t" in line)
    assert lines == {
        "prediction_log\tserving_predictionlog": "6", "shadow_log\tserving_predictionlog (shadow)": "3",
        "dead_letters\tserving_deadletter": "1", "features_offline\tfeatures_featurevalue": "1",
        "features_online\tredis": "1", "exposures\texperiments_exposure": "1", "feedback\tmonitoring_feedback": "2",
        "business_events\tmonitoring_businessevent": "1", "async_predictions\tserving_asyncprediction": "0",
    }  # fmt: skip
    assert "erased 16 rows for subject hmac:" in out and ALICE not in out

    assert set(counts_for(ALICE, everywhere.request_ids[ALICE]).values()) == {0}
    assert tables_holding(ALICE) == {} and redis_fields_holding(ALICE) == {}
    assert counts_for(BOB, everywhere.request_ids[BOB]) == bob_before
    # The receipt is a row of the audit trail: counts per table, the subject by its hash (the dry run left none).
    from registry.models import AuditEntry

    receipt = AuditEntry.objects.get(action="subject.erase")
    assert receipt.source == "command" and receipt.after["total"] == 16 and not receipt.after["dry_run"]
    assert receipt.after["counts"]["prediction_log"] == {"serving_predictionlog": 6}
    assert receipt.target.startswith("hmac:") and ALICE not in json.dumps(receipt.after)
    assert "erased 0 rows" in run("erase_subject", ALICE)  # again: nothing left to find


def test_export_gives_everything_held_for_the_key_as_json_and_nothing_of_others(everywhere, tmp_path):
    exported = json.loads(run("export_subject", ALICE))
    stores = exported["stores"]
    assert exported["key"] == ALICE and exported["subject"].startswith("hmac:")
    logged = stores["prediction_log"]["serving_predictionlog"]
    assert sorted(r["request_id"] for r in logged) == sorted(everywhere.request_ids[ALICE])
    assert {r["routing_key"] for r in logged} == {ALICE} and all("inputs" in r and "outputs" in r for r in logged)
    assert len(stores["shadow_log"]["serving_predictionlog (shadow)"]) == 3
    assert [e["value"] for e in stores["business_events"]["monitoring_businessevent"]] == [9.5]
    assert sorted(f["actual"] for f in stores["feedback"]["monitoring_feedback"]) == [0, 1]
    assert [(e["experiment"], e["key"]) for e in stores["exposures"]["experiments_exposure"]] == [
        ("forest-vs-logreg", ALICE)
    ]
    assert [(v["view"], v["data"]) for v in stores["features_offline"]["features_featurevalue"]] == [
        ("profile", {"visits": 3})
    ]
    assert [(v["view"], v["entity_key"], v["data"]) for v in stores["features_online"]["redis"]] == [
        ("profile", ALICE, {"visits": 3})
    ]
    assert len(stores["dead_letters"]["serving_deadletter"]) == 1
    assert BOB not in json.dumps(exported)

    target = tmp_path / "alice.json"
    assert "wrote 16 rows" in run("export_subject", ALICE, "--output", str(target))
    assert json.loads(target.read_text())["stores"] == stores
    assert counts_for(ALICE, everywhere.request_ids[ALICE])["predictions"] == 6  # an export changes nothing


def test_the_api_exports_and_erases_for_admins_only(everywhere, django_user_model):
    permissions.ensure_roles()
    admin = django_user_model.objects.create_user(username="dpo", password="correct horse battery staple")
    admin.groups.add(Group.objects.get(name=permissions.ADMIN_ROLE))
    client = APIClient(HTTP_AUTHORIZATION=f"Token {user_token_create(user=admin)[1]}")

    exported = client.post("/api/v1/subjects/export/", {"key": ALICE}, format="json")
    assert exported.status_code == 200
    assert len(exported.json()["stores"]["prediction_log"]["serving_predictionlog"]) == 6

    dry = client.post("/api/v1/subjects/erase/", {"key": ALICE, "dry_run": True}, format="json").json()
    assert dry["dry_run"] is True and dry["total"] == 16 and dry["failed"] == {}
    assert PredictionLog.objects.filter(routing_key=ALICE).count() == 6

    receipt = client.post("/api/v1/subjects/erase/", {"key": ALICE}, format="json").json()
    assert receipt["counts"]["prediction_log"] == {"serving_predictionlog": 6} and receipt["total"] == 16
    assert receipt["subject"] == dry["subject"] and ALICE not in json.dumps(receipt)
    assert tables_holding(ALICE) == {}

    blank = client.post("/api/v1/subjects/erase/", {"key": ""}, format="json")
    assert blank.status_code == 400 and "key" in blank.json()


def test_a_store_that_fails_is_named_and_the_others_are_still_erased(everywhere, monkeypatch):
    monkeypatch.setattr(online.online_store, "_value", RedisOnlineStore("redis://127.0.0.1:1/0"))  # nothing there
    with pytest.raises(CommandError, match="not erased from 1 store.*features_online: ConnectionError"):
        run("erase_subject", ALICE)
    left = counts_for(ALICE, everywhere.request_ids[ALICE])
    assert left.pop("online") == 1 and set(left.values()) == {0}
    monkeypatch.setattr(online.online_store, "_value", None)  # Redis back: running again finishes the job
    assert "erased 1 rows" in run("erase_subject", ALICE)
    assert redis_fields_holding(ALICE) == {}


def test_a_key_that_is_not_text_is_refused_in_one_line():
    with pytest.raises(CommandError, match="^key: give the routing key"):
        run("erase_subject", "   ")


@pytest.mark.django_db
def test_the_database_online_store_is_erased_too(settings, monkeypatch):
    from features.definitions import definitions_apply
    from features.models import FeatureView, OnlineValue
    from features.services import feature_values_push
    from tests.subjects.conftest import PROFILE, USER

    settings.MODELWORKS_FEATURES_ONLINE_STORE = "database"
    monkeypatch.setattr(online.online_store, "_value", None)
    definitions_apply(entities=[USER], views=[PROFILE])
    view = FeatureView.objects.get(name="profile")
    feature_values_push(view=view, rows=[{"user_id": k, "event_timestamp": "2026-01-01T00:00:00+00:00", "visits": 1}
                                         for k in (ALICE, BOB)])  # fmt: skip
    exported = json.loads(run("export_subject", ALICE))["stores"]["features_online"]["features_onlinevalue"]
    assert [(row["entity_key"], row["data"]) for row in exported] == [(ALICE, {"visits": 1})]
    assert "features_online\tfeatures_onlinevalue\t1" in run("erase_subject", ALICE)
    assert list(OnlineValue.objects.values_list("entity_key", flat=True)) == [BOB]
    monkeypatch.setattr(online.online_store, "_value", None)


def test_asynchronous_requests_are_erased_and_exported_with_the_rest(production, logreg):
    """A queued asynchronous request holds the key in its stored body until it expires: erasure takes it too."""
    from serving.asynchronous import async_prediction_submit
    from serving.models import AsyncPrediction
    from tests.serving.conftest import rows_of

    def submit(key: str) -> str:
        body = json.dumps({"instances": rows_of(logreg.X_test, 1), "key": key, "async": True}).encode()
        reply = async_prediction_submit(name="cancer", body=body, version=None, alias=None, request_id=None,
                                        caller="user:1")  # fmt: skip
        assert reply.status == 202, reply.payload
        return reply.payload["id"]

    alice, bob = submit(ALICE), submit(BOB)
    exported = json.loads(run("export_subject", ALICE))["stores"]["async_predictions"]["serving_asyncprediction"]
    assert [(row["id"], row["body"]["key"]) for row in exported] == [(alice, ALICE)]

    out = run("erase_subject", ALICE)
    assert "async_predictions\tserving_asyncprediction\t1" in out
    assert [str(pk) for pk in AsyncPrediction.objects.values_list("pk", flat=True)] == [bob]
