"""Brute force and abuse (issue 21): login lockout, hashed expiring tokens, management API throttles, the scrape
credential on /metrics and the security headers."""

from __future__ import annotations

import random
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from knox.models import AuthToken
from rest_framework.test import APIClient

from serving.tokens import token_digest, user_token_create
from tests.serving.conftest import post, rows_of

PASSWORD = "correct horse battery staple"
TOKEN_URL = "/api/v1/auth/token/"
PREDICT = "/api/v1/models/cancer/predict"


@pytest.fixture
def address() -> str:
    """A client address of the test's own: lockouts and per-address throttles are counted per address, and the
    shared cache outlives one test."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def admin_login(client: Client, address: str, username: str, password: str):
    return client.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"},
                       REMOTE_ADDR=address)  # fmt: skip


def token_request(client: APIClient, address: str, username: str, password: str):
    return client.post(TOKEN_URL, {"username": username, "password": password}, format="json", REMOTE_ADDR=address)


def assert_locked_out(answer, username: str) -> None:
    assert answer.status_code == 429
    assert answer["Retry-After"] == "900"
    text = answer.json()["detail"] if answer["Content-Type"].startswith("application/json") else answer.content.decode()
    assert f"Too many failed logins for &#x27;{username}&#x27;" in text or f"for '{username}'" in text
    assert re.search(r"try again in 15 minutes \(after \d\d:\d\d UTC\)", text), text


# --- Lockout --------------------------------------------------------------------------------------------------------


def test_the_admin_login_locks_out_after_five_failures_even_for_the_right_password(staff, address):
    client = Client()
    for _ in range(4):
        answer = admin_login(client, address, "grace", "wrong")
        assert answer.status_code == 200 and b"Please enter the correct username and password" in answer.content
    assert_locked_out(admin_login(client, address, "grace", "wrong"), "grace")
    locked = admin_login(client, address, "grace", PASSWORD)
    assert_locked_out(locked, "grace")
    assert client.get("/admin/").status_code == 302  # not logged in
    # Another address is not locked out (the lockout is per username and address), and a success resets the count.
    other = Client()
    assert admin_login(other, "192.0.2.44", "grace", PASSWORD).status_code == 302
    assert other.get("/admin/").status_code == 200


def test_the_token_endpoint_locks_out_after_five_failures_even_for_the_right_password(user, address):
    client = APIClient()
    for _ in range(4):
        answer = token_request(client, address, "ada", "wrong")
        assert answer.status_code == 400, answer.content
        assert answer.json() == {"non_field_errors": ["Unable to log in with provided credentials."]}
    assert_locked_out(token_request(client, address, "ada", "wrong"), "ada")
    locked = token_request(client, address, "ada", PASSWORD)
    assert_locked_out(locked, "ada")
    assert "token" not in locked.json()
    assert AuthToken.objects.filter(user=user).count() == 0


def test_behind_a_trusted_proxy_each_client_address_counts_on_its_own(user, address, settings):
    settings.MODELWORKS_TRUST_X_FORWARDED_FOR = True
    client = APIClient()

    def through_proxy(forwarded: str, password: str):
        return client.post(TOKEN_URL, {"username": "ada", "password": password}, format="json",
                           REMOTE_ADDR=address, HTTP_X_FORWARDED_FOR=forwarded)  # fmt: skip

    for _ in range(5):
        through_proxy("203.0.113.7, 198.51.100.1", "wrong")  # the proxy appended 198.51.100.1
    assert through_proxy("198.51.100.1", PASSWORD).status_code == 429
    assert through_proxy("6.6.6.6, 198.51.100.2", PASSWORD).status_code == 200  # another client of the same proxy


def test_the_lockout_ends_after_the_cool_off(user, address):
    client = APIClient()
    for _ in range(5):
        token_request(client, address, "ada", "wrong")
    assert token_request(client, address, "ada", PASSWORD).status_code == 429
    from axes.models import AccessAttempt

    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))  # the 15 minutes have passed
    assert token_request(client, address, "ada", PASSWORD).status_code == 200


def test_the_token_endpoint_is_throttled_per_address_whatever_the_username(db, address, settings):
    settings.MODELWORKS_TOKEN_RATE = "3/min"
    client = APIClient()
    for n in range(3):
        assert token_request(client, address, f"nobody-{n}", "guess").status_code == 400
    refused = token_request(client, address, "nobody-3", "guess")
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60


def test_bad_token_requests_get_field_level_detail(db, address):
    answer = APIClient().post(TOKEN_URL, {"username": "ada"}, format="json", REMOTE_ADDR=address)
    assert answer.status_code == 400
    assert answer.json() == {"password": ["This field is required."]}


# --- Tokens: hashed at rest, expiring --------------------------------------------------------------------------------


def test_a_token_is_stored_hashed_expires_after_the_ttl_and_works_until_then(user, address, settings, production):
    answer = token_request(APIClient(), address, "ada", PASSWORD)
    assert answer.status_code == 200, answer.content
    raw = answer.json()["token"]
    assert re.fullmatch(r"mwt_[0-9a-f]{64}", raw)
    (stored,) = AuthToken.objects.filter(user=user)
    assert stored.digest == token_digest(raw) and raw not in (stored.digest, stored.token_key)
    assert abs((stored.expiry - timezone.now()) - timedelta(days=30)) < timedelta(minutes=1)  # MODELWORKS_TOKEN_TTL
    with connection.cursor() as cursor:  # the raw value is nowhere in the table
        cursor.execute("SELECT COUNT(*) FROM knox_authtoken WHERE digest = %s OR token_key = %s", [raw, raw])
        assert cursor.fetchone() == (0,)

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    assert client.get("/api/v1/models/").status_code == 200
    body = {"instances": [{"mean radius": 14.0}]}
    assert post(Client(HTTP_AUTHORIZATION=f"Token {raw}"), PREDICT, body).status_code != 401

    AuthToken.objects.filter(digest=stored.digest).update(expiry=timezone.now() - timedelta(seconds=1))
    expired = client.get("/api/v1/models/")
    assert expired.status_code == 401
    assert "this token expired at" in expired.json()["detail"]
    assert "POST /api/v1/auth/token/" in expired.json()["detail"]
    assert not AuthToken.objects.filter(digest=stored.digest).exists()


def test_an_expired_token_is_refused_on_the_prediction_path(user, production, logreg):
    token, raw = user_token_create(user=user)
    caller = Client(HTTP_AUTHORIZATION=f"Token {raw}")
    body = {"instances": rows_of(logreg.X_test, 1)}
    assert post(caller, PREDICT, body).status_code == 200
    AuthToken.objects.filter(digest=token.digest).update(expiry=timezone.now() - timedelta(seconds=1))
    from serving import key_cache

    key_cache.token_cache().forget(raw)  # past the 5 s it is trusted for after a read (README)
    refused = post(caller, PREDICT, body)
    assert refused.status_code == 401
    assert "POST /api/v1/auth/token/" in refused.json()["detail"]


def test_a_token_without_an_expiry_is_refused(user):
    token, raw = user_token_create(user=user)
    AuthToken.objects.filter(digest=token.digest).update(expiry=None)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    answer = client.get("/api/v1/models/")
    assert answer.status_code == 401
    assert answer.json()["detail"].startswith("this token has no expiry and is not accepted")


def test_an_old_raw_token_is_refused_with_a_message_saying_what_to_do(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0123456789abcdef" * 2 + "01234567")
    answer = client.get("/api/v1/models/")
    assert answer.status_code == 401
    assert answer.json()["detail"] == (
        "tokens issued before tokens were stored hashed and expiring are no longer accepted: "
        "get a new one with POST /api/v1/auth/token/ (username and password)"
    )


@pytest.mark.django_db(transaction=True)
def test_the_migration_drops_the_raw_token_table():
    from importlib import import_module

    drop_raw_tokens = import_module("serving.migrations.0009_invalidate_raw_tokens").drop_raw_tokens
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id integer, created timestamp)")
        cursor.execute("INSERT INTO authtoken_token VALUES ('0123456789abcdef0123456789abcdef01234567', 1, now())")
        cursor.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('authtoken', '0001_initial', now())")
    with connection.schema_editor() as editor:
        drop_raw_tokens(None, editor)
    assert "authtoken_token" not in connection.introspection.table_names()
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM django_migrations WHERE app = 'authtoken'")
        assert cursor.fetchone() == (0,)
    with connection.schema_editor() as editor:
        drop_raw_tokens(None, editor)  # nothing to do the second time


# --- Per-caller throttles on the management API -----------------------------------------------------------------------


def test_the_management_api_is_throttled_per_user_and_predictions_are_not(user, staff, production, logreg, settings):
    settings.MODELWORKS_API_RATE = "5/min"
    raw = user_token_create(user=user)[1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    for _ in range(5):
        assert client.get("/api/v1/models/").status_code == 200
    refused = client.get("/api/v1/models/cancer/")
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert "throttled" in refused.json()["detail"].lower()

    other = APIClient()  # another user keeps the full rate
    other.credentials(HTTP_AUTHORIZATION=f"Token {user_token_create(user=staff)[1]}")
    assert other.get("/api/v1/models/").status_code == 200

    caller = Client(HTTP_AUTHORIZATION=f"Token {raw}")  # the throttled user's predictions still answer
    body = {"instances": rows_of(logreg.X_test, 1)}
    assert [post(caller, PREDICT, body).status_code for _ in range(10)] == [200] * 10


def test_api_keys_are_throttled_each_on_their_own(db, settings):
    from serving.keys import api_key_create

    settings.MODELWORKS_API_RATE = "2/min"
    clients = []
    for name in ("one", "two"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(name=name, scopes=['registry:read'])[1]}")
        clients.append(client)
    assert [clients[0].get("/api/v1/models/").status_code for _ in range(3)] == [200, 200, 429]
    assert clients[1].get("/api/v1/models/").status_code == 200


# --- /metrics: the scrape credential ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/metrics/monitoring"])
def test_metrics_need_the_scrape_token_or_an_allowed_network(db, settings, path):
    settings.MODELWORKS_METRICS_TOKEN = "scrape-" + "s3cr3t" * 6
    outside = {"REMOTE_ADDR": "203.0.113.5"}
    refused = Client().get(path, **outside)
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"MODELWORKS_METRICS_TOKEN" in refused.content
    assert Client().get(path, HTTP_AUTHORIZATION="Bearer wrong", **outside).status_code == 401
    scraped = Client().get(path, HTTP_AUTHORIZATION=f"Bearer {settings.MODELWORKS_METRICS_TOKEN}", **outside)
    assert scraped.status_code == 200 and b"# HELP" in scraped.content
    assert Client().get(path, REMOTE_ADDR="127.0.0.1").status_code == 200  # loopback is allowed by default
    settings.MODELWORKS_METRICS_ALLOWED_NETWORKS = ["203.0.113.0/24"]
    assert Client().get(path, **outside).status_code == 200
    assert Client().get(path, REMOTE_ADDR="127.0.0.1").status_code == 401


@hsettings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(header=st.text(max_size=80), address=st.ip_addresses(v=4).map(str))
def test_only_the_exact_token_or_an_allowed_address_scrapes(settings, header, address):
    from django.test import RequestFactory

    from config.scrape import may_scrape

    settings.MODELWORKS_METRICS_TOKEN = "t" * 10 + "0123456789abcdef"
    settings.MODELWORKS_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    request = RequestFactory().get("/metrics", HTTP_AUTHORIZATION=header, REMOTE_ADDR=address)
    expected = header.strip() == f"Bearer {settings.MODELWORKS_METRICS_TOKEN}" or address.startswith("10.")
    assert may_scrape(request) == expected


# --- Security headers -------------------------------------------------------------------------------------------------


def test_console_pages_and_api_answers_carry_the_security_headers(staff, api):
    client = Client()
    client.force_login(staff)
    for answer in (Client().get("/admin/login/"), client.get("/admin/"), api.get("/api/v1/models/"),
                   client.get("/api/docs/")):  # fmt: skip
        assert answer.status_code == 200, answer
        csp = dict(part.strip().split(" ", 1) for part in answer["Content-Security-Policy"].split(";"))
        assert csp["script-src"] == "'self'" and "unsafe-inline" not in csp["script-src"]
        assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
        assert answer["X-Frame-Options"] == "DENY"
        assert answer["Referrer-Policy"] == "same-origin"
        assert answer["X-Content-Type-Options"] == "nosniff"
    docs = client.get("/api/docs/").content.decode()
    assert not re.search(r"<script>(?!\s*</script>)", docs) and "<script>\n" not in docs  # no inline code


def test_hsts_is_sent_over_tls_once_configured(db, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    answer = Client().get("/admin/login/", secure=True)
    assert answer["Strict-Transport-Security"] == "max-age=31536000"
    assert "Strict-Transport-Security" not in Client().get("/admin/login/")
