"""The client's feature push over real HTTP: DataFrames with mixed-precision timestamps and created times, and a
refusal that names the row and field."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
import redis
from django.conf import settings
from django.utils import timezone

from features.definitions import definitions_apply
from features.models import FeatureValue, FeatureView
from features.online import redis_key
from features.retrieval import view_cache
from modelworks_client import ApiError
from tests.features.conftest import PATIENT, VITALS

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def vitals(db):
    definitions_apply(entities=[PATIENT], views=[VITALS])
    # The online store starts empty for this view, whatever an earlier test (or a process on a copy of this
    # database) left in Redis.
    redis.Redis.from_url(settings.REDIS_URL).delete(redis_key(FeatureView.objects.get(name=VITALS["name"])))
    view_cache.clear()
    yield
    view_cache.clear()


def test_a_frame_with_mixed_precision_times_and_created_times_is_pushed(mw, vitals):
    now = timezone.now().replace(microsecond=0)
    frame = pd.DataFrame({
        "patient_id": [1, 1, 2],
        # one whole second, one with microseconds: pandas writes them with different precision
        "event_timestamp": pd.to_datetime([now - timedelta(minutes=5), now - timedelta(minutes=5),
                                           now - timedelta(minutes=3, microseconds=30864)], utc=True),
        "created_timestamp": [now - timedelta(minutes=1), now - timedelta(minutes=2), None],
        "heart_rate": [70.0, 50.0, 80.0],
    })  # fmt: skip
    assert mw.push_features("vitals", frame) == {"stored": 3, "online": 2}
    stored = {(v.entity_key, v.data["heart_rate"]): v for v in FeatureValue.objects.all()}
    assert stored[("1", 70.0)].created_ts == now - timedelta(minutes=1)
    assert stored[("2", 80.0)].event_ts == now - timedelta(minutes=3, microseconds=30864)
    assert stored[("2", 80.0)].created_ts == stored[("2", 80.0)].written_at  # no created time: when written
    rows = [{"patient_id": 1, "event_timestamp": (now - timedelta(minutes=4)).isoformat(), "heart_rate": 1.0}]
    assert mw.push_features("vitals", rows) == {"stored": 1, "online": 1}


def test_a_refused_push_names_row_and_field(mw, vitals):
    rows = [
        {"patient_id": 1, "event_timestamp": "2024-01-03T00:35:42Z", "heart_rate": 1.0},
        {"patient_id": 1, "event_timestamp": "2024-01-03T07:20:07.030864Z", "created_timestamp": "soon"},
    ]
    with pytest.raises(
        ApiError, match=r"400 on POST /api/v1/features/vitals/push: .*row 1 'created_timestamp': is not"
    ):
        mw.push_features("vitals", rows)
    assert not FeatureValue.objects.exists()


def test_training_data_for_a_frame_of_mixed_precision_times(mw, vitals):
    """pandas writes a whole-second Timestamp without fractional digits and the others with them: one request."""
    now = timezone.now().replace(microsecond=0)
    mw.push_features("vitals", [{"patient_id": 1, "event_timestamp": now - timedelta(minutes=10), "heart_rate": 9.0}])
    times = pd.to_datetime([now, now - timedelta(microseconds=30864)], utc=True)
    entities = pd.DataFrame({"patient_id": [1, 1], "event_timestamp": times})
    result = mw.historical_features(entities, ["vitals:heart_rate"])
    assert result["vitals:heart_rate"].tolist() == [9.0, 9.0]
