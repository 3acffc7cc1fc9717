"""Re-running a version's gates after its model's rules changed: a new report, the status it decides and an event
saying what changed; refused for versions the gates no longer decide."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from registry import services
from registry.models import RegistryEvent, VersionStatus

pytestmark = pytest.mark.django_db


def test_tighter_rules_reject_a_validated_version_and_looser_ones_validate_it_again(classifier_model, logreg):
    version = services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    assert version.status == VersionStatus.VALIDATED
    accuracy = version.gate_report["metrics"]["accuracy"]
    services.registered_model_update(model=classifier_model, gate_rules=[f"accuracy >= {accuracy + 0.001}"])

    rejected = services.model_version_rerun_gates(version=version)
    assert rejected.status == VersionStatus.REJECTED
    assert rejected.gate_report["metrics_source"] == "computed"
    assert rejected.gate_report["metrics"]["accuracy"] == accuracy  # the metrics stay; the rules changed
    event = RegistryEvent.objects.filter(version=version, action="version.gates_rerun").get()
    assert event.before["status"] == "validated" and event.after["status"] == "rejected"
    assert event.after["failed"] == [f"accuracy >= {accuracy + 0.001}"] and "required >=" in event.message

    services.registered_model_update(model=classifier_model, gate_rules=["accuracy >= 0.5"])
    assert services.model_version_rerun_gates(version=version).status == VersionStatus.VALIDATED


def test_a_production_version_is_not_re_gated(classifier_model, logreg):
    version = services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    services.alias_create(model=classifier_model, name="production", version=version)
    with pytest.raises(ValidationError, match="gates are re-run only on"):
        services.model_version_rerun_gates(version=version)
