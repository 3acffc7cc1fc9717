"""API keys: shown once, stored hashed, scoped, expiring, revocable at once, throttled."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from serving.keys import api_key_revoke, hash_key
from serving.models import ApiKey
from tests.serving.conftest import make_key, post, rows_of

pytestmark = pytest.mark.django_db
URL = "/api/v1/models/cancer/predict"


def call(raw: str | None, body, url: str = URL):
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {raw}") if raw else Client()
    return post(client, url, body)


def test_prediction_needs_a_key(production, logreg):
    response = call(None, {"instances": rows_of(logreg.X_test, 1)})
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Api-Key"
    assert call("mwk_not-a-key", {"instances": rows_of(logreg.X_test, 1)}).status_code == 401


def test_scopes_limit_what_a_key_may_predict(production, logreg):
    body = {"instances": rows_of(logreg.X_test, 1)}
    assert call(make_key("predict:other-model"), body).status_code == 403
    assert call(make_key("registry:read"), body).status_code == 403
    assert call(make_key("predict:*"), body).status_code == 200
    assert call(make_key("predict:cancer"), body).status_code == 200


def test_revocation_and_expiry_take_effect_at_once(production, logreg):
    body = {"instances": rows_of(logreg.X_test, 1)}
    raw = make_key("predict:cancer")
    assert call(raw, body).status_code == 200
    api_key_revoke(key=ApiKey.objects.get(key_hash=hash_key(raw)))
    assert call(raw, body).status_code == 401
    expired = make_key("predict:cancer", expires_at=timezone.now() + timedelta(seconds=1))
    ApiKey.objects.filter(key_hash=hash_key(expired)).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert call(expired, body).status_code == 401


def test_a_key_over_its_rate_answers_429_with_retry_after(production, logreg):
    raw = make_key("predict:cancer", rate_limit_per_second=3)
    body = {"instances": rows_of(logreg.X_test, 1)}
    codes = [call(raw, body) for _ in range(8)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert limited[0]["Retry-After"] == "1"
    assert sum(r.status_code == 200 for r in codes) <= 6  # at most two one-second windows' worth


def test_keys_are_stored_hashed_and_printed_once(capsys):
    call_command("create_api_key", "ci", "--scope", "predict:*", "--scope", "registry:read")
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    key = ApiKey.objects.get()
    assert raw.startswith("mwk_") and key.key_hash == hash_key(raw) and raw not in str(key.__dict__)
    assert key.scopes == ["predict:*", "registry:read"]


def test_registry_api_accepts_keys_with_registry_scopes(production):
    reader = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('registry:read')}")
    assert reader.get("/api/v1/models/").status_code == 200
    denied = reader.post("/api/v1/models/", {"name": "x", "task": "regression"}, content_type="application/json")
    assert denied.status_code == 403
    writer = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('registry:write', 'registry:read')}")
    created = writer.post("/api/v1/models/", {"name": "x", "task": "regression"}, content_type="application/json")
    assert created.status_code == 201
    predictor = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('predict:*')}")
    assert predictor.get("/api/v1/models/").status_code == 403


def test_the_admin_session_can_predict_with_csrf(client, staff, production, logreg):
    client.force_login(staff)
    assert post(client, URL, {"instances": rows_of(logreg.X_test, 1)}).status_code == 200
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff)
    assert post(strict, URL, {"instances": rows_of(logreg.X_test, 1)}).status_code == 403


def test_a_key_created_in_the_admin_is_shown_once_and_works(client, staff, production, logreg):
    client.force_login(staff)
    form = client.get("/admin/serving/apikey/add/").content.decode()
    assert 'value="predict:cancer"' in form and 'value="deploy:cancer"' in form  # ticked, not typed as JSON
    fields = {"name": "from-console", "rate_limit_per_second": "0", "expires_at": ""}
    none_ticked = client.post("/admin/serving/apikey/add/", fields).content.decode()
    assert "Tick at least one scope" in none_ticked and not ApiKey.objects.filter(name="from-console").exists()
    response = client.post("/admin/serving/apikey/add/", {**fields, "scopes": ["predict:cancer"]}, follow=True)
    shown = [str(m) for m in response.context["messages"]]
    raw = next(m.split("The new key is ")[1].split(" ")[0] for m in shown if "The new key is" in m)
    assert ApiKey.objects.get(name="from-console").key_hash == hash_key(raw)
    assert call(raw, {"instances": rows_of(logreg.X_test, 1)}).status_code == 200


def test_a_revocation_broadcast_by_another_process_evicts_the_remembered_key(production, logreg):
    import time

    import redis
    from django.conf import settings

    from serving.key_cache import CHANNEL, key_cache

    memory = key_cache()
    assert memory.wait_until_subscribed(5)
    raw = make_key("predict:cancer")
    body = {"instances": rows_of(logreg.X_test, 1)}
    assert call(raw, body).status_code == 200
    assert memory.get(hash_key(raw)) is not None  # remembered: the next call needs no database or Redis
    # Another web process revokes the key: the row changes and the hash is published.
    ApiKey.objects.filter(key_hash=hash_key(raw)).update(revoked_at=timezone.now())
    redis.Redis.from_url(settings.REDIS_URL).publish(CHANNEL, hash_key(raw))
    deadline = time.monotonic() + 2
    while memory.get(hash_key(raw)) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert call(raw, body).status_code == 401
