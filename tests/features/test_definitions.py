"""Entities and views from YAML (apply_features), the API and the admin's rules: idempotent, with a plan."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from features.definitions import definitions_apply
from features.models import Entity, FeatureValue, FeatureView
from tests.features.conftest import PATIENT, VITALS, ago

pytestmark = pytest.mark.django_db

YAML = """
entities:
  - name: customer
    join_key: customer_id
    value_type: string
feature_views:
  - name: spend
    entity: customer
    ttl: 30d
    owner: data-team
    description: Rolling spend per customer
    tags: {team: growth}
    features:
      - {name: spend_7d, dtype: float}
      - {name: orders_7d, dtype: int}
"""


def test_apply_features_prints_the_plan_and_is_idempotent(tmp_path, capsys):
    path = tmp_path / "features.yaml"
    path.write_text(YAML)
    call_command("apply_features", str(path), "--dry-run")
    assert capsys.readouterr().out.splitlines() == [
        "would create entity customer (join key customer_id, string)",
        "would create view spend on customer (ttl 2592000s): spend_7d:float, orders_7d:int",
    ]
    assert not Entity.objects.exists()
    call_command("apply_features", str(path))
    assert "create view spend" in capsys.readouterr().out
    view = FeatureView.objects.get(name="spend")
    assert (view.ttl_seconds, view.owner, view.tags) == (2592000, "data-team", {"team": "growth"})
    call_command("apply_features", str(path))
    assert capsys.readouterr().out == "no changes\n"
    path.write_text(
        YAML.replace("ttl: 30d", "ttl: 7d").replace("{name: orders_7d, dtype: int}", "{name: n, dtype: int}")
    )
    call_command("apply_features", str(path))
    assert capsys.readouterr().out == "update view spend: +n, -orders_7d, ttl 2592000s -> 604800s\n"


def test_apply_features_refuses_bad_files_in_one_line(tmp_path):
    path = tmp_path / "features.yaml"
    path.write_text("entities: [\n")
    with pytest.raises(CommandError, match="not valid YAML"):
        call_command("apply_features", str(path))
    path.write_text(YAML.replace("dtype: float", "dtype: decimal"))
    with pytest.raises(CommandError, match=r"spend.features\[0\]: dtype 'decimal' is not one of"):
        call_command("apply_features", str(path))
    path.write_text(YAML.replace("entity: customer", "entity: shop"))
    with pytest.raises(CommandError, match="no entity named 'shop'"):
        call_command("apply_features", str(path))
    path.write_text(YAML.replace("ttl: 30d", "ttl: soon"))
    with pytest.raises(CommandError, match="ttl: 'soon' is not a duration"):
        call_command("apply_features", str(path))
    assert not FeatureView.objects.exists() and not Entity.objects.exists()


def test_types_cannot_change_under_stored_values(vitals):
    FeatureValue.objects.create(view=vitals, entity_key="1", event_ts=vitals.created_at, created_ts=vitals.created_at,
                                data={"heart_rate": 1.0})  # fmt: skip
    retyped = {**VITALS, "features": [{"name": "heart_rate", "dtype": "string"}]}
    with pytest.raises(ValidationError, match="feature types cannot change once values exist"):
        definitions_apply(entities=[], views=[retyped])
    with pytest.raises(ValidationError, match="join key or type cannot change"):
        definitions_apply(entities=[{**PATIENT, "value_type": "string"}], views=[])
    assert definitions_apply(entities=[PATIENT], views=[VITALS]) == []


def test_the_api_defines_and_lists_views(api):
    created = api.post("/api/v1/features/entities/", PATIENT, format="json")
    assert created.status_code == 200 and created.json()["changes"] == [
        "create entity patient (join key patient_id, int)"
    ]
    response = api.post("/api/v1/features/views/", VITALS, format="json")
    assert response.status_code == 200 and response.json()["ttl_seconds"] == 3600
    assert api.post("/api/v1/features/views/", VITALS, format="json").json()["changes"] == []
    listed = api.get("/api/v1/features/views/").json()["results"]
    assert [v["name"] for v in listed] == ["vitals"] and listed[0]["entity"] == "patient"
    assert api.get("/api/v1/features/views/vitals/").json()["owner"] == "ada@example.com"
    bad = api.post("/api/v1/features/views/", {**VITALS, "ttl": -1}, format="json")
    assert bad.status_code == 400 and bad.json() == {"ttl": ["must be positive"]}
    assert APIClient().get("/api/v1/features/views/").status_code in (401, 403)


def test_freshness_and_sample_in_the_admin(client, staff, vitals, store):
    from features.services import feature_values_push, feature_view_materialize

    feature_values_push(view=vitals, rows=[{"patient_id": 41, "event_timestamp": ago(minutes=2), "ward": "ICU"}])
    feature_view_materialize(view=vitals)
    client.force_login(staff)
    listing = client.get("/admin/features/featureview/").content.decode()
    assert "vitals" in listing and "Online rows" in listing and "Last materialization" in listing
    page = client.get(f"/admin/features/featureview/{vitals.pk}/change/").content.decode()
    assert "ICU" in page and "41" in page
    # Features are typed as lines, the TTL as a duration, tags as name = value; problems come back in words.
    assert "ward: string" in page and 'value="1h"' in page  # vitals' features and TTL as a person writes them
    added = client.post("/admin/features/featureview/add/", {
        "name": "labs", "entity": vitals.entity.pk, "features": "ldl: decimal", "ttl_seconds": "soon", "owner": "",
        "description": "", "tags": "pii",
    })  # fmt: skip
    body = added.content.decode()
    assert added.status_code == 200 and "&#x27;soon&#x27; is not a duration" in body
    assert "line 1 (&#x27;pii&#x27;) is not name = value" in body
    added = client.post("/admin/features/featureview/add/", {
        "name": "labs", "entity": vitals.entity.pk, "features": "ldl: decimal", "ttl_seconds": "2d", "owner": "",
        "description": "", "tags": "",
    })  # fmt: skip
    assert added.status_code == 200 and "dtype &#x27;decimal&#x27; is not one of" in added.content.decode()
    client.post("/admin/features/featureview/add/", {
        "name": "labs", "entity": vitals.entity.pk, "features": "ldl: float  # low-density lipoprotein\n\n",
        "ttl_seconds": "2d", "owner": "", "description": "", "tags": "source = lab",
    })  # fmt: skip
    labs = FeatureView.objects.get(name="labs")
    assert labs.features == [{"name": "ldl", "dtype": "float", "description": "low-density lipoprotein"}]
    assert labs.ttl_seconds == 2 * 86400 and labs.tags == {"source": "lab"}
    assert FeatureView.objects.get(name="labs").created_timestamp_column == "created_timestamp"  # left empty
