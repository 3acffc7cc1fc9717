"""Serving fixtures: a production model, API keys, and fresh per-process serving state for each test."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client

from registry import services as registry
from serving import model_cache as model_cache_module
from serving import prediction_log as prediction_log_module
from serving import routing
from serving.key_cache import credential_reads
from serving.keys import api_key_create
from tests.platform.processes import free_port


@pytest.fixture(autouse=True)
def fresh_serving_state(monkeypatch):
    """Each test starts with empty route and model caches and its own prediction-log buffer.

    The buffer only flushes when a test says so (a long interval), so its rows land in the test's own transaction;
    tests about the background flusher build their own.
    """
    routing.clear_cache()
    monkeypatch.setattr(model_cache_module.model_cache, "_value", None)
    monkeypatch.setattr(
        prediction_log_module.prediction_log,
        "_value",
        prediction_log_module.PredictionLogBuffer(flush_seconds=3600, max_rows=100_000, batch_rows=100_000),
    )
    yield
    routing.clear_cache()


@pytest.fixture
def production(classifier_model, logreg):
    """`cancer` v1, validated on held-out data and pointed at by the production alias."""
    version = registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=version)
    return version


def make_key(*scopes: str, **options) -> str:
    return api_key_create(name="test", scopes=list(scopes), **options)[1]


@pytest.fixture
def key(db) -> str:
    return make_key("predict:cancer")


@pytest.fixture
def caller(key) -> Client:
    """A client that authenticates with an API key, as a production service would."""
    return Client(HTTP_AUTHORIZATION=f"Api-Key {key}")


def rows_of(frame, count: int) -> list[dict]:
    return [{k: float(v) for k, v in row.items()} for row in frame.head(count).to_dict(orient="records")]


def post(client: Client, url: str, body, **extra):
    import json

    return client.post(url, json.dumps(body), content_type="application/json", **extra)


class Database:
    """The database gone away for real: the connection closed and its settings pointed at a port nothing listens
    on (shared by every thread's connection), so every query fails as it does when Postgres is down."""

    def __init__(self) -> None:
        self._port = connection.settings_dict["PORT"]

    def away(self) -> None:
        connection.close()
        credential_reads.close_connections()  # it keeps one between reads, which a real outage would break
        connection.settings_dict["PORT"] = free_port()

    def back(self) -> None:
        connection.close()
        connection.settings_dict["PORT"] = self._port


@pytest.fixture
def database():
    db = Database()
    try:
        yield db
    finally:
        db.back()
