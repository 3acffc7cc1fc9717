"""API keys over REST: staff create, list and revoke them; nobody else can, not even a key with every scope."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from serving.models import ApiKey
from serving.tokens import user_token_create
from tests.serving.conftest import make_key, rows_of

pytestmark = pytest.mark.django_db
KEYS = "/api/v1/api-keys/"


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_token_create(user=user)[1]}")
    return client


@pytest.fixture
def admin_api(staff) -> APIClient:
    return token_client(staff)


def test_staff_create_a_key_see_it_once_and_predict_with_it_until_they_revoke_it(admin_api, production, logreg):
    created = admin_api.post(
        KEYS, {"name": "ci", "scopes": ["predict:cancer", "registry:read"], "rate_limit_per_second": 50}, format="json"
    )
    assert created.status_code == 201, created.content
    body = created.json()
    raw = body["key"]
    assert raw.startswith("mwk_") and raw.startswith(body["prefix"])
    assert body["scopes"] == ["predict:cancer", "registry:read"] and body["active"] is True
    assert body["created_by"] == "grace" and body["rate_limit_per_second"] == 50
    # Shown once: neither the list nor the detail carries it.
    listed = admin_api.get(KEYS).json()["results"]
    assert [k["id"] for k in listed] == [body["id"]] and "key" not in listed[0]
    detail = admin_api.get(f"{KEYS}{body['id']}/").json()
    assert "key" not in detail and raw not in str(detail) and detail["prefix"] == body["prefix"]

    caller = APIClient(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    predict = {"instances": rows_of(logreg.X_test, 1)}
    assert caller.post("/api/v1/models/cancer/predict", predict, format="json").status_code == 200

    revoked = admin_api.post(f"{KEYS}{body['id']}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["active"] is False and revoked.json()["revoked_at"]
    assert caller.post("/api/v1/models/cancer/predict", predict, format="json").status_code == 401
    again = admin_api.post(f"{KEYS}{body['id']}/revoke/")
    assert again.status_code == 409 and "already revoked" in again.json()["detail"]
    assert admin_api.get(KEYS, {"active": "true"}).json()["results"] == []
    assert [k["id"] for k in admin_api.get(KEYS, {"active": "false"}).json()["results"]] == [body["id"]]


BAD_KEYS = [  # (body, the field the 400 names)
    ({"name": "ci", "scopes": ["predict:cancer", "admin:all"]}, "scopes"),
    ({"name": "ci", "scopes": []}, "scopes"),
    ({"name": "ci", "scopes": "predict:*"}, "scopes"),
    ({"name": "", "scopes": ["predict:*"]}, "name"),
    ({"name": "x" * 101, "scopes": ["predict:*"]}, "name"),
    ({"name": "nul\x00", "scopes": ["predict:*"]}, "name"),
    ({"name": "lone\ud800", "scopes": ["predict:*"]}, "name"),
    ({"name": "ci", "scopes": ["predict:\x00"]}, "scopes"),
    ({"name": "ci", "scopes": ["predict:*"], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"name": "ci", "scopes": ["predict:*"], "expires_at": "tomorrow"}, "expires_at"),
    ({"name": "ci", "scopes": ["predict:*"], "rate_limit_per_second": -1}, "rate_limit_per_second"),
]


def test_bad_keys_are_a_400_naming_the_field(admin_api):
    for body, field in BAD_KEYS:
        answer = admin_api.post(KEYS, json.dumps(body), content_type="application/json")  # escapes a lone surrogate
        assert answer.status_code == 400 and field in answer.json(), (body, answer.content)
    assert not ApiKey.objects.exists()


def test_only_staff_users_manage_keys_never_an_api_key(user, db):
    existing = ApiKey.objects.create(name="old", prefix="mwk_old", key_hash="0" * 64, scopes=["predict:*"])
    everyone = [
        (APIClient(), 401),
        (token_client(user), 403),  # logged in, not staff
        (APIClient(HTTP_AUTHORIZATION=f"Api-Key {make_key('predict:*', 'registry:read', 'registry:write')}"), 403),
        (APIClient(HTTP_AUTHORIZATION=f"Api-Key {make_key('registry:*', 'predict:*')}"), 403),
    ]
    for client, code in everyone:
        assert client.get(KEYS).status_code == code
        assert client.get(f"{KEYS}{existing.pk}/").status_code == code
        assert client.post(KEYS, {"name": "mine", "scopes": ["predict:*"]}, format="json").status_code == code
        assert client.post(f"{KEYS}{existing.pk}/revoke/").status_code == code
    assert ApiKey.objects.filter(name="mine").count() == 0
    assert ApiKey.objects.get(pk=existing.pk).revoked_at is None


def test_a_staff_session_manages_keys_too(client, staff):
    client.force_login(staff)
    answer = client.post(KEYS, {"name": "from-browser", "scopes": ["registry:read"]}, content_type="application/json")
    assert answer.status_code == 201 and answer.json()["key"].startswith("mwk_")
    assert client.get(f"{KEYS}999999/").status_code == 404
