"""Artifacts are checked against their sha256 before loading; tampering is refused, marked and logged."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from registry import services
from registry.models import ModelVersion, RegistryEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def registered(classifier_model, logreg):
    return services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )


def test_an_untouched_artifact_loads_and_predicts_like_the_original(registered, logreg):
    loaded = services.model_version_load(registered)
    assert (loaded.predict(logreg.X_test) == logreg.estimator.predict(logreg.X_test)).all()
    assert registered.sha256 == __import__("hashlib").sha256(logreg.artifact).hexdigest()
    assert registered.size_bytes == len(logreg.artifact)


def test_a_tampered_artifact_is_refused_marked_and_logged(registered, artifact_root):
    path = artifact_root / registered.artifact_path
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(services.ArtifactIntegrityError):
        services.model_version_load(registered)

    registered.refresh_from_db()
    assert registered.integrity_failed_at is not None
    assert not registered.servable
    event = RegistryEvent.objects.get(version=registered, action="version.integrity_failed")
    assert event.before == {"sha256": registered.sha256}
    with pytest.raises(ValidationError):
        services.alias_create(model=registered.model, name="production", version=registered)


def test_a_swapped_artifact_with_the_right_size_is_still_caught(registered, artifact_root, forest):
    (artifact_root / registered.artifact_path).write_bytes(forest.artifact)
    assert services.model_version_verify_integrity(version=registered) is False
    assert ModelVersion.objects.get(pk=registered.pk).integrity_failed_at is not None


def test_a_missing_artifact_fails_verification(registered, artifact_root):
    (artifact_root / registered.artifact_path).unlink()
    assert services.model_version_verify_integrity(version=registered) is False
    assert RegistryEvent.objects.filter(version=registered, action="version.integrity_failed").count() == 1
