"""The version page's buttons and the model page's version tools: download an artifact (its sha256 checked first,
as loading does) and re-run the gates after the model's rules changed, both through registry.services."""

from __future__ import annotations

import hashlib

import pytest
from django.urls import reverse

from registry import services
from registry.models import VersionStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(classifier_model, logreg):
    return services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )


def test_the_artifact_downloads_with_its_name_and_sha256(admin_client, version, logreg):
    answer = admin_client.get(reverse("admin:registry_modelversion_artifact", args=[version.pk]))
    body = b"".join(answer) if answer.streaming else answer.content
    assert answer.status_code == 200 and body == logreg.artifact
    assert answer["Content-Disposition"] == f'attachment; filename="cancer-v1.{version.format}"'
    assert answer["X-Content-SHA256"] == hashlib.sha256(body).hexdigest() == version.sha256


def test_a_tampered_artifact_is_not_downloaded_and_the_page_says_why(admin_client, version, artifact_root):
    path = artifact_root / version.artifact_path
    path.write_bytes(path.read_bytes() + b"tampered")
    answer = admin_client.get(reverse("admin:registry_modelversion_artifact", args=[version.pk]), follow=True)
    text = answer.content.decode()
    assert answer.redirect_chain[-1][0] == reverse("admin:registry_modelversion_change", args=[version.pk])
    assert "not downloaded" in text and "refusing to load" in text
    version.refresh_from_db()
    assert version.integrity_failed_at is not None


def test_gates_re_run_from_the_model_page_after_the_rules_changed(admin_client, version, classifier_model):
    page_url = reverse("admin:model_page", args=[classifier_model.name])
    page = admin_client.get(page_url).content.decode()
    rerun = reverse("admin:registry_modelversion_rerun_gates", args=[version.pk])
    assert f'action="{rerun}"' in page and "re-run gates" in page
    assert reverse("admin:registry_modelversion_artifact", args=[version.pk]) in page
    assert reverse("admin:monitoring_model_report", args=[classifier_model.name]) in page

    services.registered_model_update(model=classifier_model, gate_rules=["accuracy >= 0.9999"])
    answer = admin_client.post(rerun, {"next": page_url}, follow=True)
    assert answer.redirect_chain[-1][0] == page_url
    assert "gates re-run against the current rules, validated → rejected; failed: accuracy &gt;= 0.9999" in (
        answer.content.decode()
    )
    version.refresh_from_db()
    assert version.status == VersionStatus.REJECTED
    elsewhere = admin_client.post(rerun, {"next": "https://evil.example/"})
    assert elsewhere["Location"] == reverse("admin:registry_modelversion_change", args=[version.pk])
