"""A missing online store degrades reads, never stops them: with the test's own Redis hung (SIGSTOP) or down, values
come from on-demand functions and the offline store (the real Postgres), their source says so, and a metric counts
it; a prediction by entity id answers the same as with Redis up."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from features import online
from features.definitions import definitions_apply
from features.models import FeatureView
from features.on_demand import on_demand_feature, unregister
from features.retrieval import get_online_features
from features.services import feature_values_push
from serving.key_cache import key_cache as process_key_cache
from tests.features.conftest import PATIENT, ago
from tests.features.test_serving import URL, by_patient, caller, fresh_serving_state  # noqa: F401 (fixtures)
from tests.platform.instances import own_redis

pytestmark = pytest.mark.django_db
RATIO = {"name": "cells", "entity": "patient", "ttl": "1h", "features": [
    {"name": "mean_radius", "dtype": "float"}, {"name": "worst_radius", "dtype": "float"},
    {"name": "radius_ratio", "dtype": "float"},
]}  # fmt: skip
REFS = ["cells:mean_radius", "cells:worst_radius", "cells:radius_ratio"]


def unavailable(reason: str) -> float:
    return REGISTRY.get_sample_value("modelworks_feature_online_unavailable_total", {"reason": reason}) or 0.0


@pytest.fixture
def own_store(settings, monkeypatch):
    """The online store on the test's own Redis, with a web process's short socket timeout."""
    # The process's API key cache listens for revocations on settings.REDIS_URL from when it is first built, for the
    # rest of the process: built now, it stays on the suite's Redis instead of on this server, dead after the test
    # (and every later test's keys would then never be remembered).
    process_key_cache()
    with own_redis() as server:
        settings.REDIS_URL = server.url
        settings.MODELWORKS_FEATURES_ONLINE_STORE = "redis"
        settings.REDIS_CLIENT_OPTIONS = {"socket_timeout": 0.2, "socket_connect_timeout": 0.2}
        settings.MODELWORKS_CACHE_BACKOFF_MS = 60_000  # one failure, then every read in the test skips Redis
        monkeypatch.setattr(online.online_store, "_value", None)
        try:
            yield server
        finally:
            server.resume()
            monkeypatch.setattr(online.online_store, "_value", None)


@pytest.fixture
def cells() -> FeatureView:
    definitions_apply(entities=[PATIENT], views=[RATIO])

    @on_demand_feature("cells:radius_ratio", inputs=["cells:mean_radius", "cells:worst_radius"])
    def ratio(values):
        return values["cells:mean_radius"] / values["cells:worst_radius"]

    yield FeatureView.objects.select_related("entity").get(name="cells")
    unregister("cells:radius_ratio")


def push(view: FeatureView) -> None:
    feature_values_push(view=view, rows=[
        {"patient_id": 1, "event_timestamp": ago(minutes=5), "mean_radius": 12.0, "worst_radius": 16.0},
        {"patient_id": 2, "event_timestamp": ago(minutes=9), "mean_radius": 9.0, "worst_radius": 10.0},
    ])  # fmt: skip


def test_a_hung_redis_answers_every_value_from_the_offline_store_and_counts_it(own_store, cells):
    push(cells)
    entities = [{"patient_id": 1}, {"patient_id": 2}, {"patient_id": 3}]
    up = get_online_features(entities, REFS).as_json()["features"]
    assert up["cells:mean_radius"]["sources"] == ["online", "online", "missing"]
    assert up["cells:radius_ratio"]["sources"] == ["on_demand", "on_demand", "missing"]

    failed, skipped = unavailable("error"), unavailable("skipped")
    own_store.pause()
    hung = get_online_features(entities, REFS).as_json()["features"]
    for ref in ("cells:mean_radius", "cells:worst_radius"):
        assert hung[ref]["values"] == up[ref]["values"]
        assert hung[ref]["sources"] == ["offline", "offline", "missing"]
    # An on-demand value is computed from its offline inputs, as it would be from online ones.
    assert hung["cells:radius_ratio"]["values"] == [0.75, 0.9, None]
    assert hung["cells:radius_ratio"]["sources"] == ["on_demand", "on_demand", "missing"]
    assert unavailable("error") == failed + 1

    # Within the back-off the next read does not try Redis at all (it would cost the socket timeout again).
    again = get_online_features(entities, REFS).as_json()["features"]
    assert again["cells:mean_radius"]["sources"] == ["offline", "offline", "missing"]
    assert unavailable("skipped") == skipped + 1 and unavailable("error") == failed + 1


def test_a_redis_that_is_down_answers_from_the_offline_store(own_store, cells):
    push(cells)
    own_store.stop()
    answer = get_online_features([{"patient_id": 2}], REFS)
    assert answer.features["cells:worst_radius"].values == [10.0]
    assert answer.features["cells:worst_radius"].sources == ["offline"]
    assert 9 * 60 - 5 < answer.features["cells:worst_radius"].age_seconds[0] < 9 * 60 + 60


def test_a_prediction_by_entity_id_answers_the_same_while_redis_is_hung(own_store, caller, by_patient):  # noqa: F811
    rows = {"instances": [{"patient_id": 0}, {"patient_id": 3}]}
    up = caller.post(URL, rows, content_type="application/json")
    assert up.status_code == 200, up.json()
    failed = unavailable("error")
    own_store.pause()
    hung = caller.post(URL, rows, content_type="application/json")
    assert hung.status_code == 200, hung.json()
    assert hung.json()["predictions"] == up.json()["predictions"]
    assert unavailable("error") == failed + 1
