"""Any key a client may send is erased exactly: its rows, in either stored form, and no other key's."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from monitoring.models import BusinessEvent, Feedback
from monitoring.services.events import EventItem, business_events_record
from monitoring.services.feedback import FeedbackItem, feedback_record
from registry.subjects import stored_key, subject_erase

pytestmark = pytest.mark.django_db

# What the API takes as a key: up to 200 characters Postgres can store (no NUL, no lone surrogate), not blank.
keys = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=200)
keys = keys.filter(lambda k: k.strip())


@examples(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=keys, other=keys, hashed=st.booleans())
def test_erasing_a_key_takes_exactly_its_rows(settings, key, other, hashed):
    if key[:200] == other[:200]:
        other = other + "x" if len(other) < 200 else other[:-1]
    settings.MODELWORKS_HASH_ROUTING_KEYS = hashed
    BusinessEvent.objects.all().delete()
    Feedback.objects.all().delete()
    when = timezone.now() - timedelta(minutes=1)
    for k in (key, other):
        business_events_record(items=[EventItem(key=k, name="buy"), EventItem(key=k, name="click")])
        feedback_record(items=[FeedbackItem(actual=1, routing_key=k, time=when)])
    receipt = subject_erase(key=key, source="test")
    assert receipt["counts"]["business_events"] == {"monitoring_businessevent": 2}
    assert receipt["counts"]["feedback"] == {"monitoring_feedback": 1}
    assert set(BusinessEvent.objects.values_list("key", flat=True)) == {stored_key(other)}
    assert list(Feedback.objects.values_list("routing_key", flat=True)) == [stored_key(other)]
