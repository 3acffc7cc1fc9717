"""Changes made through the Python client are recorded in the audit trail as coming from the client, not raw API."""

from __future__ import annotations

import pytest

from registry.models import AuditEntry

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_change_through_the_client_is_recorded_as_the_clients(mw, user, classifier_model):
    assert mw._http.headers["X-Modelworks-Client"].startswith("modelworks-client/")
    answer = mw._http.post("/api/v1/monitors", json={"model": "cancer", "name": "nightly"})
    assert answer.status_code == 201, answer.text
    entry = AuditEntry.objects.get(action="monitor.created")
    assert (entry.source, entry.actor_id, entry.request_id) == ("client", user.pk, answer.headers["X-Request-ID"])
