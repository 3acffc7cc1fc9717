"""Business events: stored idempotently by event id, read per routing key for rollouts and experiments."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import BusinessEvent
from monitoring.selectors import business_event_totals, business_events, business_impact
from tests.monitoring.conftest import flush, predict_each, rows


def _post(api, body):
    return api.post("/api/v1/events", body, format="json")


@pytest.mark.django_db
def test_events_are_stored_once_per_event_id_and_read_per_key(api):
    now = timezone.now()
    body = {
        "items": [
            {"key": "u1", "name": "purchase", "value": 20.0, "event_id": "e1", "time": now.isoformat()},
            {"key": "u1", "name": "purchase", "value": 5.0, "event_id": "e2"},
            {"key": "u2", "name": "purchase", "value": 7.5},
            {"key": "u2", "name": "click"},
        ]
    }
    assert _post(api, body).json() == {"received": 4, "stored": 4, "duplicates": 0}
    assert _post(api, body["items"][:2]).json() == {"received": 2, "stored": 0, "duplicates": 2}
    assert BusinessEvent.objects.count() == 4

    totals = business_event_totals("purchase")
    assert totals == {"u1": {"n": 2, "sum": 25.0, "mean": 12.5}, "u2": {"n": 1, "sum": 7.5, "mean": 7.5}}
    assert [e.value for e in business_events("purchase", keys=["u1"])] == [20.0, 5.0]
    assert business_events("click").get().value == 1.0
    assert not business_events("purchase", since=now + timedelta(minutes=5)).exists()


@pytest.mark.django_db
def test_a_repeated_event_id_inside_one_batch_is_stored_once(api):
    item = {"key": "u1", "name": "purchase", "value": 3, "event_id": "same"}
    assert _post(api, [item, item]).json()["stored"] == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"name": "purchase"}, "key"),
        ({"key": "u1"}, "name"),
        ({"key": "u1", "name": "p", "value": "lots"}, "value"),
        ({"key": "u1", "name": "p", "time": "soon"}, "time"),
    ],
)
def test_bad_events_are_a_400_naming_the_field(api, item, field):
    response = _post(api, {"items": [item]})
    assert response.status_code == 400
    assert field in str(response.json())
    assert BusinessEvent.objects.count() == 0


@pytest.mark.django_db
def test_business_impact_counts_events_of_keys_the_model_served(api, cancer_v1, logreg):
    predict_each("cancer", rows(logreg.X_test, 0, 2), keys=["u1", "u2"])
    flush()
    items = [
        {"key": "u1", "name": "purchase", "value": 10},
        {"key": "u1", "name": "purchase", "value": 30},
        {"key": "u2", "name": "purchase", "value": 5},
        {"key": "stranger", "name": "purchase", "value": 1000},  # never served by this model
    ]
    _post(api, items)
    (row,) = business_impact("cancer")
    assert row == {"name": "purchase", "events": 3, "keys": 2, "total": 45.0, "mean": 15.0}
    assert business_impact("other-model") == []
