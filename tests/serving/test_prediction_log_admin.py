"""The prediction log's admin page answers without scanning the log whole: no full COUNT(*) of the unfiltered list
(the planner's estimate once it is big), no DISTINCT (the model filter's choices are the registered models)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from registry import services as registry
from serving.admin import EstimatingPaginator
from serving.models import Outcome, PredictionLog, RouteReason

pytestmark = pytest.mark.django_db


def log_rows(model_name: str, count: int) -> None:
    now = timezone.now()
    PredictionLog.objects.bulk_create(
        PredictionLog(request_id=f"req-{model_name}-{i}", model_name=model_name, version=1, inputs={"instances": []},
                      outputs={"predictions": [0]}, latency_ms=1.0, route_reason=RouteReason.alias("production"),
                      outcome=Outcome.OK, created_at=now)
        for i in range(count)
    )  # fmt: skip


@pytest.fixture
def log(db):
    for name in ("alpha", "beta", "gamma"):
        registry.registered_model_create(name=name, task="classification")
    log_rows("alpha", 30)
    log_rows("beta", 5)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE serving_predictionlog")  # the planner's statistics, as autovacuum keeps them


def changelist(client, query: str = "") -> tuple[str, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/admin/serving/predictionlog/{query}")
    assert response.status_code == 200
    return response.content.decode(), [q["sql"] for q in queries.captured_queries]


def log_queries(sql: list[str]) -> list[str]:
    return [s for s in sql if "serving_predictionlog" in s]


def test_a_big_unfiltered_log_is_counted_by_the_planners_estimate(client, staff, log, monkeypatch):
    monkeypatch.setattr(EstimatingPaginator, "EXACT_BELOW", 10)  # 35 rows is "big" here
    client.force_login(staff)
    html, sql = changelist(client)
    assert "35 prediction logs" in html  # the estimate, right after ANALYZE
    assert "req-alpha-0" in html and "req-beta-4" in html
    assert not any("DISTINCT" in s.upper() for s in sql)
    counts = [s for s in log_queries(sql) if "COUNT(" in s.upper()]
    assert counts and all("LIMIT 11" in s for s in counts)  # one bounded count, never the whole table
    assert any(s.startswith("EXPLAIN") for s in log_queries(sql))


def test_a_small_log_and_a_filtered_one_are_counted_exactly_without_distinct(client, staff, log):
    client.force_login(staff)
    html, sql = changelist(client)
    assert "35 prediction logs" in html
    assert not any("DISTINCT" in s.upper() for s in sql)
    assert all("LIMIT" in s for s in log_queries(sql) if "COUNT(" in s.upper())
    # The model filter offers every registered model, traffic or not: its choices never come from the log.
    for name in ("alpha", "beta", "gamma"):
        assert f'href="?model_name={name}"' in html

    filtered, sql = changelist(client, "?model_name=beta")
    assert "5 prediction logs" in filtered and "req-beta-0" in filtered and "req-alpha-0" not in filtered
    assert not any("DISTINCT" in s.upper() for s in sql)
    searched, _ = changelist(client, "?q=req-alpha-7")
    assert "req-alpha-7" in searched and "req-alpha-1<" not in searched
