"""The registry's event log is append-only, in the ORM and in the database itself."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from registry import services
from registry.models import AppendOnlyError, RegistryEvent

pytestmark = pytest.mark.django_db


def test_every_registry_change_is_recorded_with_who_and_what(classifier_model, logreg, user):
    version = services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv, actor=user
    )
    services.alias_create(model=classifier_model, name="champion", version=version, actor=user)
    services.registered_model_update(model=classifier_model, description="new words", actor=user)
    actions = list(
        RegistryEvent.objects.filter(model=classifier_model).order_by("id").values_list("action", "actor_name")
    )
    assert actions == [
        ("model.created", "system"),
        ("version.registered", "ada"),
        ("version.validated", "ada"),
        ("alias.created", "ada"),
        ("model.updated", "ada"),
    ]
    updated = RegistryEvent.objects.get(action="model.updated")
    assert updated.before["description"] == "" and updated.after["description"] == "new words"


def test_events_cannot_be_changed_or_deleted_through_the_orm(classifier_model):
    event = RegistryEvent.objects.get(model=classifier_model)
    event.message = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()


def test_postgres_refuses_raw_updates_and_deletes_of_events(classifier_model):
    for statement in ("UPDATE registry_registryevent SET message = 'x'", "DELETE FROM registry_registryevent"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert RegistryEvent.objects.filter(model=classifier_model, message="").count() == 1
