"""Monitoring fixtures: predictions made through real serving and flushed to the real prediction log."""

from __future__ import annotations

from datetime import datetime

import pytest

from registry import services as registry
from serving import prediction_log
from serving import services as serving
from serving.models import PredictionLog
from tests.serving.conftest import fresh_serving_state  # noqa: F401  (autouse: fresh caches and log buffer)


@pytest.fixture
def cancer_v1(classifier_model, logreg):
    version = registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=version)
    return version


@pytest.fixture
def diabetes_v1(regressor_model, ridge):
    version = registry.model_version_register(
        model=regressor_model, artifact=ridge.artifact, evaluation_data=ridge.eval_csv
    )
    registry.alias_create(model=regressor_model, name="production", version=version)
    return version


def rows(frame, start: int = 0, count: int | None = None) -> list[dict]:
    part = frame.iloc[start:] if count is None else frame.iloc[start : start + count]
    return [{k: float(v) for k, v in row.items()} for row in part.to_dict(orient="records")]


def predict_each(model_name: str, instances: list[dict], keys: list[str] | None = None) -> list[str]:
    """One real prediction request per row; answers their request ids. Call `flush()` to write the log."""
    ids = []
    for i, instance in enumerate(instances):
        result = serving.predict(
            model_name=model_name,
            payload={"instances": [instance]},
            alias="production",
            routing_key=keys[i] if keys else None,
        )
        ids.append(result.request_id)
    return ids


def flush() -> int:
    return prediction_log.prediction_log().flush()


def backdate(request_ids: list[str], when: datetime) -> None:
    PredictionLog.objects.filter(request_id__in=request_ids).update(created_at=when)


class Receiver:
    """A real local HTTP server standing in for a webhook receiver; answers `failures` 500s before any 200."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading
        import time

        self.bodies: list[dict] = []
        self.failures = 0
        self.attempts = 0
        self.attempted_at: list[float] = []  # time.monotonic() of each POST
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                receiver.attempts += 1
                receiver.attempted_at.append(time.monotonic())
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_response(500)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def shifted(frame, factor: float = 1.8):
    return frame * factor


def webhooks_queued(callbacks: list) -> list:
    """The on-commit callbacks that send an alert's webhook (others, such as a new OOD profile's cache drop, may be
    queued by the same run)."""
    return [callback for callback in callbacks if callback.__module__ == "monitoring.services.alerts"]
