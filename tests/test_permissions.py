"""Who may do what (registry/permissions.py, config/access.py): roles, per-model grants and API key scopes, checked
against every URL of the API and every admin action that moves traffic."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from registry import permissions
from registry import services as registry
from registry.models import ModelAlias
from rollouts import services as rollouts
from serving.keys import api_key_create

pytestmark = pytest.mark.django_db


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def key_client(*scopes: str) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(name='t', scopes=list(scopes))[1]}")


def with_roles(django_user_model, username: str, *roles: str):
    permissions.ensure_roles()
    person = django_user_model.objects.create_user(username=username, password="correct horse battery staple")
    person.groups.add(*Group.objects.filter(name__in=roles))
    return person


@pytest.fixture
def two_models(db, logreg):
    """Models a and b, each with v1 in production and a validated v2."""
    made = {}
    for name in ("a", "b"):
        model = registry.registered_model_create(name=name, task="classification")
        v1 = registry.model_version_register(model=model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)
        registry.alias_create(model=model, name="production", version=v1)
        registry.model_version_register(model=model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)
        made[name] = model
    return made


def production(name: str) -> int:
    return ModelAlias.objects.select_related("version").get(model__name=name, name="production").version.version


def test_a_token_without_permissions_cannot_move_production_or_roll_back(django_user_model, two_models):
    nobody = token_client(django_user_model.objects.create_user(username="nobody", password="x" * 12))
    moved = nobody.put("/api/v1/models/a/aliases/production/", {"version": 2}, format="json")
    assert moved.status_code == 403
    assert moved.json()["missing_permission"] == "read" or moved.json()["missing_permission"].startswith("deploy")
    assert production("a") == 1
    registry.alias_move(model=two_models["a"], name="production", version=two_models["a"].versions.get(version=2))
    rolled = nobody.post("/api/v1/models/a/rollback/", {}, format="json")
    assert rolled.status_code == 403 and production("a") == 2


def test_a_viewer_may_read_but_not_move_production(django_user_model, two_models):
    viewer = token_client(with_roles(django_user_model, "vera", permissions.VIEWER))
    assert viewer.get("/api/v1/models/a/aliases/production/").status_code == 200
    moved = viewer.put("/api/v1/models/a/aliases/production/", {"version": 2}, format="json")
    assert moved.status_code == 403
    assert moved.json() == {"detail": "vera lacks the permission deploy:a", "missing_permission": "deploy:a"}
    assert production("a") == 1


def test_a_deployer_limited_to_a_cannot_promote_b(django_user_model, two_models):
    person = with_roles(django_user_model, "dee", permissions.VIEWER)
    registry.model_grant_give(model=two_models["a"], permission="deploy", user=person)
    client = token_client(person)
    started = {}
    for name in ("a", "b"):  # started by the platform (no actor), steered by the limited deployer
        started[name] = rollouts.rollout_start(model=two_models[name], candidate=two_models[name].versions.get(version=2))
    refused = client.post(f"/api/v1/rollouts/{started['b'].pk}/promote/")
    assert refused.status_code == 403 and refused.json()["missing_permission"] == "deploy:b"
    assert production("b") == 1
    assert client.post(f"/api/v1/rollouts/{started['a'].pk}/promote/").status_code == 200
    assert production("a") == 2
    # and the same through the service itself, as the admin console and commands call it
    with pytest.raises(permissions.PermissionRefused, match="deploy:b"):
        rollouts.rollout_promote(rollout=started["b"], actor=person)


def test_a_predict_key_or_a_registry_write_key_cannot_move_production(two_models):
    for scopes in (["predict:*"], ["registry:read", "registry:write"], ["deploy:b", "registry:read"]):
        moved = key_client(*scopes).put("/api/v1/models/a/aliases/production/", {"version": 2}, format="json")
        assert moved.status_code == 403, scopes
    assert production("a") == 1
    deployer = key_client("deploy:a")
    assert deployer.put("/api/v1/models/a/aliases/production/", {"version": 2}, format="json").status_code == 200
    assert production("a") == 2
