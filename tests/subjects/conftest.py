"""Subject-rights fixtures: one subject's data (and another's) in every store, made through the real services."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from experiments import exposures
from experiments import services as experiments
from features.definitions import definitions_apply
from features.models import FeatureView
from features.services import feature_values_push
from monitoring.services.events import EventItem, business_events_record
from monitoring.services.feedback import FeedbackItem, feedback_record
from registry import services as registry
from rollouts import services as rollouts
from serving import prediction_log
from serving import services as serving
from serving.background import store_dead_letters
from serving.prediction_log import LogEntry, as_dict
from serving.shadow import shadow_runner
from tests.experiments.conftest import challenger, experiment, fresh_exposures, production  # noqa: F401
from tests.serving.conftest import fresh_serving_state, rows_of  # noqa: F401

USER = {"name": "user", "join_key": "user_id", "value_type": "string"}
PROFILE = {"name": "profile", "entity": "user", "ttl": "30d", "features": [{"name": "visits", "dtype": "int"}]}


@dataclass
class Held:
    """What was stored for each subject key: its request ids per model."""

    request_ids: dict[str, list[str]] = field(default_factory=dict)


def tables_holding(text: str) -> dict[str, int]:
    """Rows of every table in the database whose text (any column) holds `text`: the check that a key is gone."""
    found = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        for (table,) in cursor.fetchall():
            cursor.execute(f'SELECT count(*) FROM "{table}" AS t WHERE t::text LIKE %s', [f"%{text}%"])  # noqa: S608
            count = cursor.fetchone()[0]
            if count:
                found[table] = count
    return found


def redis_fields_holding(text: str) -> dict[str, int]:
    """Fields of every online-store hash in Redis whose entity key holds `text`."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    found = {}
    for name in client.scan_iter(match="mw:features:*"):
        count = sum(text in key.decode() for key in client.hkeys(name))
        if count:
            found[name.decode()] = count
    return found


@pytest.fixture
def everywhere(experiment, logreg, fresh_exposures):  # noqa: F811
    """Keys "subject-alice" and "subject-bob", each in every store: predictions on an experiment's model (so
    exposures), shadow copies on a second model, feedback by request id and by key, business events, feature
    values offline and online (Redis), and a dead letter."""
    # Views get new ids after each flush of the database: online hashes of earlier tests would linger in Redis.
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    experiments.experiment_start(experiment=experiment)
    second = registry.registered_model_create(name="second", task="classification")
    v1 = registry.model_version_register(model=second, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)
    registry.alias_create(model=second, name="production", version=v1)
    v2 = registry.model_version_register(model=second, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)
    rollouts.rollout_start(model=second, candidate=v2, mode="shadow", shadow_percent=100)
    definitions_apply(entities=[USER], views=[PROFILE])
    view = FeatureView.objects.get(name="profile")

    held = Held()
    instances = rows_of(logreg.X_test, 3)
    for key in ("subject-alice", "subject-bob"):
        ids = []
        for model in ("cancer", "second"):
            for instance in instances:
                result = serving.predict(model_name=model, payload={"instances": [instance]}, routing_key=key)
                ids.append(result.request_id)
        held.request_ids[key] = ids
    shadow_runner().drain()
    prediction_log.prediction_log().flush()
    exposures.exposure_buffer().flush()
    later = timezone.now() + timedelta(seconds=1)
    for key, ids in held.request_ids.items():
        feedback_record(items=[FeedbackItem(actual=1, request_id=ids[0]),
                               FeedbackItem(actual=0, routing_key=key, model="second", time=later)])  # fmt: skip
        business_events_record(items=[EventItem(key=key, name="purchase", value=9.5, time=later)])
        feature_values_push(view=view, rows=[{"user_id": key, "event_timestamp": timezone.now().isoformat(),
                                              "visits": 3}])  # fmt: skip
        refused = LogEntry(
            request_id=f"dead-{key}", model_name="cancer", version=1, routing_key=key, inputs=[{"x": "\ud800"}],
            outputs={}, latency_ms=1.0, cached=False, route_reason="pinned", outcome="ok", created_at=timezone.now(),
        )  # fmt: skip
        store_dead_letters("prediction_log", [(as_dict(refused), "a lone surrogate")])
    return held
