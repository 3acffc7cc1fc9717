"""What the ASGI front (serving/front.py) applies to every answer it gives itself, as Django does for its own:
every answer counted in the metrics, and the security policy of Django's SecurityMiddleware."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from serving.front import request_processor
from serving.models import ServingPolicy
from tests.serving.conftest import rows_of
from tests.serving.test_front import URL, call, predict_body

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def processor_lets_go_of_the_database():
    yield
    request_processor().close_connections()  # or the test database cannot be dropped at the end


def answered(handler: str, code: int) -> float:
    return REGISTRY.get_sample_value("modelworks_http_responses_total", {"handler": handler, "code": str(code)}) or 0


def test_every_answer_of_the_front_is_counted_by_handler_and_code(production, classifier_model, key, logreg, settings):
    ServingPolicy.objects.create(model=classifier_model, inference_budget_ms=0, breaker_consecutive_failures=50)
    before = {(h, c): answered(h, c) for h in ("predict", "infer") for c in (200, 400, 401, 413, 503)}
    headers = {"Authorization": f"Api-Key {key}"}
    body = predict_body(rows_of(logreg.X_test, 1))
    assert call("POST", URL, body, headers)[0] == 503  # over its inference budget, and no fallback
    assert call("POST", URL, body, {"Authorization": "Api-Key mw_unknown"})[0] == 401
    assert call("POST", "/v2/models/cancer/infer", b"{}", {"X-Api-Key": "mw_unknown"})[0] == 401
    assert call("POST", URL, b"{not json", headers)[0] == 400
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    assert call("POST", URL, body, headers)[0] == 413
    counted = {pair: answered(*pair) - count for pair, count in before.items() if answered(*pair) != count}
    assert counted == {("predict", 503): 1, ("predict", 401): 1, ("infer", 401): 1, ("predict", 400): 1,
                       ("predict", 413): 1}  # fmt: skip
