"""The admin console, as a data scientist uses it in a browser session."""

from __future__ import annotations

import pytest
from django.urls import reverse

from registry import services
from registry.models import ModelAlias, ModelVersion, RegistryEvent
from tests.conftest import stored_files, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def console(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def version(classifier_model, logreg):
    return services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )


def test_every_registry_page_renders_for_staff(console, version):
    services.alias_create(model=version.model, name="production", version=version)
    pages = [
        reverse("admin:index"),
        reverse("admin:registry_registeredmodel_changelist"),
        reverse("admin:registry_registeredmodel_change", args=[version.model.pk]),
        reverse("admin:registry_modelversion_changelist") + "?status__exact=production",
        reverse("admin:registry_modelversion_change", args=[version.pk]),
        reverse("admin:registry_modelalias_changelist"),
        reverse("admin:registry_registryevent_changelist") + "?q=cancer",
        reverse("admin:registry_modelversion_register"),
    ]
    for url in pages:
        response = console.get(url)
        assert response.status_code == 200, url
    detail = console.get(reverse("admin:registry_modelversion_change", args=[version.pk])).content.decode()
    assert "accuracy &gt;= 0.9" in detail and "production" in detail and version.sha256 in detail
    model_page = console.get(reverse("admin:registry_registeredmodel_change", args=[version.model.pk])).content.decode()
    assert "version.registered" in model_page  # the event history inline


def test_the_console_requires_a_staff_login(client, user, version):
    client.force_login(user)
    response = client.get(reverse("admin:registry_modelversion_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_registering_a_version_from_the_console(console, classifier_model, logreg):
    response = console.post(
        reverse("admin:registry_modelversion_register"),
        {
            "model": classifier_model.pk,
            "artifact": upload(logreg.artifact),
            "evaluation_data": upload(logreg.eval_csv, "eval.csv"),
            "target_column": "target",
        },
    )
    version = ModelVersion.objects.get(model=classifier_model)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:registry_modelversion_change", args=[version.pk])
    assert version.status == "validated" and version.created_by.username == "grace"


def test_a_bad_upload_in_the_console_shows_the_reason_and_stores_nothing(console, classifier_model, artifact_root):
    response = console.post(
        reverse("admin:registry_modelversion_register"),
        {"model": classifier_model.pk, "artifact": upload(b"not a model", "m.skops"), "target_column": "target"},
    )
    assert response.status_code == 200
    assert "not a skops archive" in response.content.decode()
    assert not ModelVersion.objects.exists() and stored_files(artifact_root) == []


def test_promote_and_archive_actions(console, version, classifier_model, logreg):
    changelist = reverse("admin:registry_modelversion_changelist")
    console.post(changelist, {"action": "promote_to_production", "_selected_action": [version.pk]})
    assert ModelAlias.objects.get(model=classifier_model, name="production").version == version

    refused = console.post(changelist, {"action": "archive", "_selected_action": [version.pk]}, follow=True)
    assert "move them before archiving" in refused.content.decode()
    second = services.model_version_register(model=classifier_model, artifact=logreg.artifact, metrics={})
    console.post(changelist, {"action": "archive", "_selected_action": [second.pk]})
    second.refresh_from_db()
    assert second.status == "archived"
    assert RegistryEvent.objects.filter(version=second, action="version.archived", actor_name="grace").exists()


def test_gate_rules_edited_in_the_console_are_validated_and_recorded(console, classifier_model):
    url = reverse("admin:registry_registeredmodel_change", args=[classifier_model.pk])
    page = console.get(url).content.decode()
    assert "production</textarea>" in page  # lists are shown one item per line, not as JSON
    form = {"description": "", "tags": "team growth", "gate_rules": "accuracy >> 1", "protected_aliases": "production",
            **_empty_inlines()}  # fmt: skip
    bad = console.post(url, form).content.decode()
    assert "cannot read the rule" in bad and "line 1 (&#x27;team growth&#x27;) is not name = value" in bad
    good = console.post(url, {**form, "tags": "team = growth\n", "gate_rules": "accuracy >= 0.95\n\nf1 >= 0.9"})
    assert good.status_code == 302
    classifier_model.refresh_from_db()
    assert classifier_model.gate_rules == ["accuracy >= 0.95", "f1 >= 0.9"]
    assert classifier_model.tags == {"team": "growth"} and classifier_model.protected_aliases == ["production"]
    assert RegistryEvent.objects.filter(model=classifier_model, action="model.updated").exists()


def _empty_inlines() -> dict[str, str]:
    data = {}
    for prefix in ("aliases", "versions", "events"):
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    return data
