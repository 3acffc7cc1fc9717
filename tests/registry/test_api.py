"""The registry over REST, as an ML engineer's script uses it: token auth, multipart uploads, aliases, events."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from tests.conftest import upload

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", "/api/v1/models/"),
    ("post", "/api/v1/models/"),
    ("get", "/api/v1/models/cancer/"),
    ("patch", "/api/v1/models/cancer/"),
    ("get", "/api/v1/models/cancer/versions/"),
    ("post", "/api/v1/models/cancer/versions/"),
    ("get", "/api/v1/models/cancer/versions/1/"),
    ("post", "/api/v1/models/cancer/versions/1/archive/"),
    ("get", "/api/v1/models/cancer/aliases/"),
    ("post", "/api/v1/models/cancer/aliases/"),
    ("get", "/api/v1/models/cancer/aliases/production/"),
    ("put", "/api/v1/models/cancer/aliases/production/"),
    ("delete", "/api/v1/models/cancer/aliases/production/"),
    ("get", "/api/v1/models/cancer/events/"),
    ("get", "/api/schema/"),
]


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_every_endpoint_requires_authentication(classifier_model, method, url):
    response = getattr(APIClient(), method)(url)
    assert response.status_code == 401, response.content


def test_a_wrong_token_is_refused(classifier_model):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/v1/models/").status_code == 401


def test_an_engineer_registers_inspects_and_promotes_a_model(api, logreg):
    created = api.post(
        "/api/v1/models/",
        {"name": "cancer", "task": "classification", "gate_rules": ["accuracy >= 0.9"], "tags": {"team": "health"}},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["owner"] == "ada"

    response = api.post(
        "/api/v1/models/cancer/versions/",
        {
            "artifact": upload(logreg.artifact),
            "evaluation_data": upload(logreg.eval_csv, "eval.csv"),
            "metrics": json.dumps({"accuracy": 0.5}),
            "lineage": json.dumps({"source": "git:abc123"}),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    version = response.json()
    assert version["version"] == 1
    assert version["status"] == "validated"
    assert version["gate_report"]["metrics_source"] == "computed"
    assert version["metrics"] == {"accuracy": 0.5}
    assert version["lineage"] == {"source": "git:abc123"}
    assert version["created_by"] == "ada"

    alias = api.post("/api/v1/models/cancer/aliases/", {"alias": "production", "version": 1}, format="json")
    assert alias.status_code == 201, alias.content
    detail = api.get("/api/v1/models/cancer/").json()
    assert detail["aliases"] == {"production": 1}
    assert detail["latest_version"] == 1
    assert api.get("/api/v1/models/cancer/versions/1/").json()["status"] == "production"
    assert [m["name"] for m in api.get("/api/v1/models/").json()["results"]] == ["cancer"]
    actions = [e["action"] for e in api.get("/api/v1/models/cancer/events/").json()["results"]]
    assert actions[0] == "alias.created" and "version.registered" in actions


def test_moving_and_deleting_aliases(api, classifier_model, logreg):
    for _ in range(2):
        api.post(
            "/api/v1/models/cancer/versions/",
            {"artifact": upload(logreg.artifact), "evaluation_data": upload(logreg.eval_csv, "e.csv")},
            format="multipart",
        )
    api.post("/api/v1/models/cancer/aliases/", {"alias": "champion", "version": 1}, format="json")
    moved = api.put("/api/v1/models/cancer/aliases/champion/", {"version": 2}, format="json")
    assert moved.status_code == 200 and moved.json()["version"] == 2
    assert api.delete("/api/v1/models/cancer/aliases/champion/").status_code == 204
    assert api.get("/api/v1/models/cancer/aliases/").json() == []
    assert api.get("/api/v1/models/cancer/aliases/champion/").status_code == 404


def test_archiving_a_version_an_alias_points_at_is_refused(api, classifier_model, logreg):
    api.post(
        "/api/v1/models/cancer/versions/",
        {"artifact": upload(logreg.artifact), "evaluation_data": upload(logreg.eval_csv, "e.csv")},
        format="multipart",
    )
    api.post("/api/v1/models/cancer/aliases/", {"alias": "production", "version": 1}, format="json")
    refused = api.post("/api/v1/models/cancer/versions/1/archive/")
    assert refused.status_code == 409 and "production" in refused.json()["version"][0]


def test_gate_rules_can_be_changed_and_bad_rules_are_refused(api, classifier_model):
    bad = api.patch("/api/v1/models/cancer/", {"gate_rules": ["accuracy => 0.9"]}, format="json")
    assert bad.status_code == 400 and "rule 0" in bad.json()["gate_rules"][0]
    good = api.patch("/api/v1/models/cancer/", {"gate_rules": ["rmse <= 3"], "description": "x"}, format="json")
    assert good.status_code == 200 and good.json()["gate_rules"] == ["rmse <= 3"]


def test_the_openapi_schema_describes_the_registry(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert "/api/v1/models/{name}/versions/" in paths


def test_api_docs_send_a_browser_to_log_in_then_render(client, staff):
    assert client.get("/api/docs/").status_code == 302
    client.force_login(staff)
    page = client.get("/api/docs/")
    assert page.status_code == 200 and b"swagger" in page.content.lower()
