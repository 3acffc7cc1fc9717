"""Experiment fixtures: `cancer` with production v1 and a validated challenger v2, a draft 50/50 experiment."""

from __future__ import annotations

import pytest

from experiments import exposures, services
from registry import services as registry
from tests.serving import conftest as serving

# The serving fixtures: a production model, an API key and a client using it, fresh per-process serving state.
caller, fresh_serving_state, key, production = (
    serving.caller,
    serving.fresh_serving_state,
    serving.key,
    serving.production,
)


@pytest.fixture(autouse=True)
def fresh_exposures(monkeypatch):
    """Each test gets its own exposure buffer that flushes only when the test says so."""
    buffer = exposures.ExposureBuffer(flush_seconds=3600, max_rows=100_000)
    monkeypatch.setattr(exposures.exposure_buffer, "_value", buffer)
    return buffer


@pytest.fixture
def challenger(production, classifier_model, forest):
    return registry.model_version_register(
        model=classifier_model, artifact=forest.artifact, metrics={"accuracy": 0.97, "f1": 0.99}
    )


@pytest.fixture
def experiment(production, challenger, staff):
    return services.experiment_create(
        model=production.model,
        name="forest-vs-logreg",
        arms=[{"name": "control", "version": 1, "weight": 50}, {"name": "forest", "version": 2, "weight": 50}],
        primary_metric={"kind": "conversion", "event": "purchase"},
        guardrail_metrics=[{"kind": "quality"}],
        salt="fixed-salt",
        actor=staff,
    )
