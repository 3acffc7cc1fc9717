"""Version numbers under concurrent registrations, with real transactions on Postgres."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from registry import services
from registry.models import ModelVersion, RegisteredModel

WRITERS = 6


@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_never_share_a_version_number(logreg):
    model = services.registered_model_create(name="contended", task="classification")
    start = threading.Barrier(WRITERS)
    numbers: list[int] = []
    errors: list[BaseException] = []

    def register() -> None:
        try:
            start.wait()
            version = services.model_version_register(
                model=RegisteredModel.objects.get(pk=model.pk), artifact=logreg.artifact, metrics={"accuracy": 1.0}
            )
            numbers.append(version.version)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=register) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert sorted(numbers) == list(range(1, WRITERS + 1))
    assert ModelVersion.objects.filter(model=model).count() == WRITERS
