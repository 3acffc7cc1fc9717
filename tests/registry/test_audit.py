"""The audit trail (registry/audit.py): a row for every listed change, by the API and by the console alike, with
actor, source, before/after, request id and address; append-only in the ORM and in Postgres; searchable in the
console, exported as CSV/JSONL by the API and a command, pruned after the retention."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from registry import audit, permissions
from registry.models import AppendOnlyError, AuditEntry, ModelGrant
from serving.keys import api_key_create
from serving.models import ApiKey, ServingPolicy
from serving.services import REQUEST_ID

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser(username="root", password=PASSWORD)


@pytest.fixture
def admin_api(root) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=root).key}")
    return client


@pytest.fixture
def console(root) -> Client:
    client = Client()
    client.force_login(root)
    return client


def only(action: str) -> AuditEntry:
    entries = list(AuditEntry.objects.filter(action=action))
    assert len(entries) == 1, [(e.action, e.target) for e in AuditEntry.objects.all()]
    return entries[0]


# --- append-only -----------------------------------------------------------------------------------------------


def test_entries_cannot_be_changed_or_deleted_through_the_orm():
    entry = audit.record("api_key.created", target="k", before=None, after={"a": 1}, source="system")
    entry.target = "rewritten"
    for attempt in (entry.save, entry.delete, AuditEntry.objects.all().delete,
                    lambda: AuditEntry.objects.update(target="x")):  # fmt: skip
        with pytest.raises(AppendOnlyError):
            attempt()
    assert AuditEntry.objects.get().target == "k"


def test_postgres_refuses_raw_updates_and_deletes_even_of_old_entries():
    audit.record("grant.given", target="g", before=None, after=None, source="system")
    AuditEntry.objects.create(action="grant.given", source="system", created_at=timezone.now() - timedelta(days=400))
    for statement in ("UPDATE registry_auditentry SET target = 'x'", "DELETE FROM registry_auditentry"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert AuditEntry.objects.count() == 2


def test_the_prune_setting_lets_only_entries_past_it_go_and_never_an_update():
    recent = audit.record("grant.given", target="new", before=None, after=None, source="system")
    AuditEntry.objects.create(action="grant.given", target="old", source="system",
                              created_at=timezone.now() - timedelta(days=40))  # fmt: skip
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('modelworks.audit_prune_days', '30', true)")
        cursor.execute("DELETE FROM registry_auditentry WHERE id = %s", [recent.pk])  # inside the retention
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT set_config('modelworks.audit_prune_days', '30', true)")
        cursor.execute("UPDATE registry_auditentry SET target = 'x'")
    assert audit.prune(days=30) == 1
    assert list(AuditEntry.objects.values_list("target", flat=True)) == ["new"]


def test_retention_comes_from_the_setting_and_zero_keeps_everything(settings):
    AuditEntry.objects.create(action="auth.login", source="admin", created_at=timezone.now() - timedelta(days=10))
    settings.MODELWORKS_AUDIT_RETENTION_DAYS = 0
    assert audit.prune() == 0
    settings.MODELWORKS_AUDIT_RETENTION_DAYS = 11
    assert audit.prune() == 0
    settings.MODELWORKS_AUDIT_RETENTION_DAYS = 7
    from registry.tasks import prune_audit

    assert prune_audit() == 1 and not AuditEntry.objects.exists()


def test_the_prune_runs_daily_from_beat():
    from django.conf import settings as django_settings

    entry = django_settings.CELERY_BEAT_SCHEDULE["registry-prune-audit"]
    assert entry["task"] == "registry.prune_audit" and entry["options"]["expires"]
    from config.celery import app

    assert "registry.prune_audit" in app.tasks


# --- request ids -----------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(supplied=st.one_of(st.none(), st.text(max_size=80), st.from_regex(REQUEST_ID, fullmatch=True)))
def test_every_response_carries_a_sane_request_id(supplied, admin_api):
    headers = {} if supplied is None else {"HTTP_X_REQUEST_ID": supplied}
    try:
        headers.get("HTTP_X_REQUEST_ID", "").encode("latin-1")
    except UnicodeEncodeError:
        headers = {}  # not something HTTP can carry
    echoed = admin_api.get("/api/v1/audit/", **headers)["X-Request-ID"]
    assert REQUEST_ID.fullmatch(echoed)
    if supplied is not None and headers and REQUEST_ID.fullmatch(supplied):
        assert echoed == supplied
    else:
        assert echoed != supplied


# --- API keys ----------------------------------------------------------------------------------------------------


def test_an_api_key_created_and_revoked_through_the_api(admin_api, root):
    made = admin_api.post("/api/v1/api-keys/", {"name": "svc", "scopes": ["predict:*"]}, format="json",
                          HTTP_X_REQUEST_ID="req-make-1")  # fmt: skip
    assert made.status_code == 201 and made["X-Request-ID"] == "req-make-1"
    created = only("api_key.created")
    key = ApiKey.objects.get(name="svc")
    assert (created.source, created.actor_id, created.actor_name) == ("api", root.pk, "root")
    assert (created.target_type, created.target_id) == ("serving.apikey", str(key.pk))
    assert created.before is None and created.after["scopes"] == ["predict:*"] and created.after["revoked_at"] is None
    assert created.request_id == "req-make-1" and created.remote_addr == "127.0.0.1"
    assert "key_hash" not in created.after and made.json()["key"] not in json.dumps(created.after)
    assert admin_api.post(f"/api/v1/api-keys/{key.pk}/revoke/").status_code == 200
    revoked = only("api_key.revoked")
    assert revoked.before["revoked_at"] is None and revoked.after["revoked_at"] is not None
    admin_api.post(f"/api/v1/api-keys/{key.pk}/revoke/")  # already revoked: nothing changed, nothing recorded
    assert AuditEntry.objects.filter(action="api_key.revoked").count() == 1


def test_an_api_key_created_changed_and_revoked_in_the_console(console, root):
    console.post("/admin/serving/apikey/add/", {"name": "console", "scopes": '["predict:*"]',
                                                "rate_limit_per_second": 0})  # fmt: skip
    key = ApiKey.objects.get(name="console")
    assert only("api_key.created").source == "admin" and only("api_key.created").actor_id == root.pk
    console.post(f"/admin/serving/apikey/{key.pk}/change/", {"rate_limit_per_second": 5, "expires_at_0": "",
                                                             "expires_at_1": ""})  # fmt: skip
    changed = only("api_key.changed")
    assert (changed.before["rate_limit_per_second"], changed.after["rate_limit_per_second"]) == (0, 5)
    console.post("/admin/serving/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert only("api_key.revoked").source == "admin"


def test_the_python_client_is_told_apart_from_raw_api_use(root):
    client = APIClient(HTTP_X_MODELWORKS_CLIENT="modelworks-client/0.1")
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=root).key}")
    client.post("/api/v1/api-keys/", {"name": "from-client", "scopes": ["predict:*"]}, format="json")
    assert only("api_key.created").source == "client"


def test_a_key_created_by_command_is_recorded_as_such(capsys):
    call_command("create_api_key", "batch-job", "--scope", "predict:*")
    created = only("api_key.created")
    assert (created.source, created.actor_name, created.actor_id) == ("command", "system", None)


def test_an_api_key_acting_is_recorded_by_its_id(classifier_model):
    key, raw = api_key_create(name="pipeline", scopes=["registry:write"])
    client = APIClient(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert client.post("/api/v1/monitors", {"model": "cancer", "name": "m"}, format="json").status_code == 201
    created = only("monitor.created")
    assert (created.api_key_id, created.actor_id, created.actor_name) == (key.pk, None, "apikey:pipeline")


# --- users, grants -------------------------------------------------------------------------------------------------


def test_users_created_changed_and_deleted_in_the_console(console, root, django_user_model):
    permissions.ensure_roles()
    console.post("/admin/auth/user/add/", {"username": "eve", "password1": PASSWORD, "password2": PASSWORD,
                                           "usable_password": "true"})  # fmt: skip
    eve = django_user_model.objects.get(username="eve")
    created = only("user.created")
    assert created.source == "admin" and created.actor_id == root.pk and created.after["groups"] == []
    assert "password" not in json.dumps(created.after)
    viewer = Group.objects.get(name=permissions.VIEWER)
    console.post(f"/admin/auth/user/{eve.pk}/change/", {
        "username": "eve", "is_active": "on", "groups": [viewer.pk], "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00", "initial-date_joined_0": "2026-01-01", "initial-date_joined_1": "00:00:00",
    })  # fmt: skip
    changed = only("user.changed")
    assert changed.before["groups"] == [] and changed.after["groups"] == [permissions.VIEWER]
    console.post(f"/admin/auth/user/{eve.pk}/password/", {"password1": "another " + PASSWORD,
                                                          "password2": "another " + PASSWORD})  # fmt: skip
    assert only("user.password_changed").target_id == str(eve.pk)
    console.post(f"/admin/auth/user/{eve.pk}/delete/", {"post": "yes"})
    assert not django_user_model.objects.filter(username="eve").exists()
    deleted = only("user.deleted")
    assert deleted.before["username"] == "eve" and deleted.after is None and deleted.target_id == str(eve.pk)


def test_grants_given_and_revoked_in_the_console_and_by_command(console, root, django_user_model, classifier_model):
    dee = django_user_model.objects.create_user(username="dee", password=PASSWORD)
    console.post("/admin/registry/modelgrant/add/", {"model": classifier_model.pk, "user": dee.pk,
                                                     "permission": "deploy"})  # fmt: skip
    given = only("grant.given")
    assert given.source == "admin" and given.actor_id == root.pk
    assert given.after == {"model": "cancer", "permission": "deploy", "user": "dee", "group": None}
    grant = ModelGrant.objects.get()
    console.post(f"/admin/registry/modelgrant/{grant.pk}/delete/", {"post": "yes"})
    assert only("grant.revoked").before["user"] == "dee" and not ModelGrant.objects.exists()
    call_command("model_grant", "give", "cancer", "write", "--user", "dee")
    assert AuditEntry.objects.filter(action="grant.given", source="command").count() == 1


def test_an_admin_created_by_ensure_admin_is_recorded(monkeypatch, capsys):
    monkeypatch.setenv("MODELWORKS_ADMIN_USER", "boss")
    monkeypatch.setenv("MODELWORKS_ADMIN_PASSWORD", PASSWORD)
    call_command("ensure_admin")
    created = only("user.created")
    assert created.source == "command" and created.after["is_superuser"] is True
    call_command("ensure_admin", "--reset-password")
    assert only("user.password_reset").source == "command"


# --- serving policies, monitors, features, alerts -------------------------------------------------------------------


def test_serving_policies_created_and_changed_in_the_console(console, classifier_model):
    fields = {"model": classifier_model.pk, "deterministic": "on", "cache_ttl_seconds": 300,
              "inference_budget_ms": 1000, "breaker_consecutive_failures": 5, "breaker_error_rate": 0.5,
              "breaker_window_seconds": 30, "breaker_min_requests": 20, "breaker_cooldown_seconds": 10}  # fmt: skip
    console.post("/admin/serving/servingpolicy/add/", fields)
    policy = ServingPolicy.objects.get()
    assert only("serving_policy.created").after["inference_budget_ms"] == 1000
    console.post(f"/admin/serving/servingpolicy/{policy.pk}/change/", {**fields, "inference_budget_ms": 250})
    changed = only("serving_policy.changed")
    assert (changed.before["inference_budget_ms"], changed.after["inference_budget_ms"]) == (1000, 250)
    assert changed.source == "admin" and changed.target_type == "serving.servingpolicy"
    console.post(f"/admin/serving/servingpolicy/{policy.pk}/delete/", {"post": "yes"})
    assert only("serving_policy.deleted").before["inference_budget_ms"] == 250


def test_a_monitor_created_through_the_api_hides_its_webhook(api, user, classifier_model):
    body = {"model": "cancer", "name": "hourly", "webhook_url": "https://hooks.example/secret-token"}
    made = api.post("/api/v1/monitors", body, format="json")
    assert made.status_code == 201, made.content
    created = only("monitor.created")
    assert created.actor_id == user.pk and created.source == "api" and created.after["name"] == "hourly"
    assert created.after["webhook_url"] is True and "secret-token" not in json.dumps(created.after)


def test_feature_definitions_through_the_api_and_the_console(api, user, console, root):
    from tests.features.conftest import PATIENT

    assert api.post("/api/v1/features/entities/", PATIENT, format="json").status_code in (200, 201)
    created = only("feature_entity.created")
    assert created.actor_id == user.pk and created.source == "api" and created.after["join_key"] == "patient_id"
    api.post("/api/v1/features/entities/", PATIENT, format="json")  # unchanged: nothing recorded
    assert AuditEntry.objects.filter(action__startswith="feature_entity.").count() == 1
    from features.models import Entity

    patient = Entity.objects.get(name="patient")
    console.post(f"/admin/features/entity/{patient.pk}/change/", {"join_key": "patient_id", "value_type": "int",
                                                                 "description": "a person in care"})  # fmt: skip
    updated = only("feature_entity.updated")
    assert updated.source == "admin" and updated.actor_id == root.pk
    assert (updated.before["description"], updated.after["description"]) == ("", "a person in care")


@pytest.fixture
def alert(classifier_model):
    from monitoring.models import Alert, AlertKind, Monitor

    monitor = Monitor.objects.create(model=classifier_model, name="hourly")
    return Alert.objects.create(monitor=monitor, version=1, kind=AlertKind.QUALITY, subject="f1", message="m")


def test_alert_acknowledged_through_the_api_and_silenced_in_the_console(api, user, console, root, alert):
    assert api.post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {"note": "on it"}, format="json").status_code == 200
    acknowledged = only("alert.acknowledged")
    assert acknowledged.actor_id == user.pk and acknowledged.source == "api"
    assert acknowledged.before["acknowledged_at"] is None and acknowledged.after["acknowledgement"] == "on it"
    console.post(f"/admin/monitoring/alert/{alert.pk}/control/silence-1h/")
    silenced = only("alert.silenced")
    assert silenced.source == "admin" and silenced.actor_id == root.pk and silenced.after["silenced_until"]
    console.post("/admin/monitoring/alert/", {"action": "resolve", "_selected_action": [alert.pk]})
    assert only("alert.resolved").after["resolution"] == "resolved by root"


# --- logins ----------------------------------------------------------------------------------------------------


def test_console_logins_and_failed_logins(root):
    client = Client()
    client.post("/admin/login/?next=/admin/", {"username": "root", "password": "wrong"})
    failed = only("auth.login_failed")
    assert failed.source == "admin" and failed.after == {"username": "root"} and failed.actor_id is None
    assert "wrong" not in json.dumps(failed.after) and failed.remote_addr == "127.0.0.1"
    client.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})
    login = only("auth.login")
    assert login.actor_id == root.pk and login.source == "admin" and login.request_id


def test_token_logins_and_failed_ones(root):
    client = APIClient()
    assert client.post("/api/v1/auth/token/", {"username": "root", "password": "nope"}).status_code == 400
    assert only("auth.login_failed").source == "api"
    answer = client.post("/api/v1/auth/token/", {"username": "root", "password": PASSWORD},
                         HTTP_X_REQUEST_ID="login-7")  # fmt: skip
    assert answer.status_code == 200
    token = only("auth.token")
    assert token.actor_id == root.pk and token.request_id == "login-7" and answer.json()["token"] not in str(token)


# --- the console's page and the export --------------------------------------------------------------------------


def test_the_console_page_is_read_only_and_for_admins(console, django_user_model):
    entry = audit.record("grant.given", target="g", before=None, after={"x": 1}, source="system")
    listing = console.get("/admin/registry/auditentry/?family=grant&q=g")
    assert listing.status_code == 200 and "grant.given" in listing.content.decode()
    assert console.get("/admin/registry/auditentry/add/").status_code == 403
    page = console.get(f"/admin/registry/auditentry/{entry.pk}/change/").content.decode()
    assert 'name="_save"' not in page
    assert console.post(f"/admin/registry/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    permissions.ensure_roles()
    for role in (permissions.VIEWER, permissions.DATA_SCIENTIST, permissions.DEPLOYER):
        person = django_user_model.objects.create_user(username=role.replace(" ", "-"), password=PASSWORD,
                                                       is_staff=True)  # fmt: skip
        person.groups.add(Group.objects.get(name=role))
        other = Client()
        other.force_login(person)
        assert other.get("/admin/registry/auditentry/").status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_export_as_csv_and_jsonl_with_filters(admin_api):
    for n in range(3):
        audit.record("api_key.created", target=f"k{n}", before=None, after={"n": n, "text": 'a,"b"\nc'},
                     source="api")  # fmt: skip
    audit.record("grant.given", target="g", before=None, after=None, source="admin")
    lines = admin_api.get("/api/v1/audit/?format=jsonl&action=api_key.")
    assert lines.status_code == 200 and lines["Content-Type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in b"".join(lines.streaming_content).decode().splitlines()]
    assert [r["target"] for r in rows] == ["k2", "k1", "k0"] and rows[0]["after"] == {"n": 2, "text": 'a,"b"\nc'}
    table = admin_api.get("/api/v1/audit/?format=csv&source=admin")
    assert table["Content-Type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(b"".join(table.streaming_content).decode())))
    assert [r["action"] for r in parsed] == ["grant.given"] and parsed[0]["before"] == ""
    audit.record("auth.login_failed", target="=HYPERLINK(1)", before=None, after=None, source="admin")
    table = admin_api.get("/api/v1/audit/?format=csv&action=auth.login_failed")
    parsed = list(csv.DictReader(io.StringIO(b"".join(table.streaming_content).decode())))
    assert parsed[0]["target"] == "'=HYPERLINK(1)"  # never a formula in a spreadsheet
    paged = admin_api.get("/api/v1/audit/?limit=2").json()
    assert paged["count"] == 5 and len(paged["results"]) == 2
    bad = admin_api.get("/api/v1/audit/?since=yesterday&source=nowhere")
    assert bad.status_code == 400 and set(bad.json()) >= {"since", "source"}


def test_export_audit_command(tmp_path, capsys):
    audit.record("auth.login", target="root", before=None, after=None, source="admin")
    call_command("export_audit")
    assert json.loads(capsys.readouterr().out)["action"] == "auth.login"
    out = tmp_path / "audit.csv"
    call_command("export_audit", "--format", "csv", "--output", str(out), "--since", "2000-01-01T00:00:00Z")
    assert list(csv.DictReader(out.open()))[0]["target"] == "root"
    with pytest.raises(CommandError, match="--since"):
        call_command("export_audit", "--since", "last week")
    call_command("export_audit", "--prune")
    assert "deleted 0 audit entries" in capsys.readouterr().out
