"""Every paginated list endpoint of the management API, found in the URL conf (so a new one is covered without
editing this file): huge or negative `limit`/`offset` values answer a page or a 400 naming the parameter, never 500."""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from config.pagination import MAX_LIMIT, MAX_OFFSET
from experiments import services as experiments
from monitoring.services.monitors import monitor_create
from registry import services as registry
from registry.webhooks.services import webhook_endpoint_create

pytestmark = pytest.mark.django_db


def _routes(patterns, prefix: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            view = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
            if view is not None and hasattr(view, "list") and getattr(view, "pagination_class", None) is not None:
                yield prefix + str(pattern.pattern)


LIST_ROUTES = sorted(set(_routes(get_resolver().url_patterns)))


def test_the_url_conf_has_the_list_endpoints_this_table_is_about():
    assert len(LIST_ROUTES) >= 10, LIST_ROUTES
    assert "api/v1/models/<slug:name>/versions/" in LIST_ROUTES


@pytest.fixture
def objects(classifier_model, logreg, forest):
    """One of everything a list route names: model `cancer` with two versions, an experiment, a monitor, a webhook
    endpoint."""
    v1 = registry.model_version_register(model=classifier_model, artifact=logreg.artifact, metrics={"accuracy": 0.99})
    registry.model_version_register(model=classifier_model, artifact=forest.artifact, metrics={"accuracy": 0.99})
    registry.alias_create(model=classifier_model, name="production", version=v1)
    experiment = experiments.experiment_create(
        model=classifier_model, name="bounds", primary_metric={"kind": "quality"},
        arms=[{"name": "a", "version": 1, "weight": 1}, {"name": "b", "version": 2, "weight": 1}],
    )  # fmt: skip
    monitor = monitor_create(model=classifier_model, name="bounds")
    endpoint = webhook_endpoint_create(url="http://127.0.0.1:9/hook", event_types=["alias.moved"])
    return {"models": "cancer", "experiments": experiment.name, "monitors": monitor.pk, "webhooks": endpoint.pk}


def url_of(route: str, objects: dict) -> str:
    """The route with its parameters filled in from `objects`, keyed by the path segment before each parameter."""
    parts = route.split("/")
    for index, part in enumerate(parts):
        if part.startswith("<"):
            owner = parts[index - 1]
            assert owner in objects, f"add a sample object for {owner!r} to test {route}"
            parts[index] = str(objects[owner])
    return "/" + "/".join(parts)


@pytest.fixture
def staff_client(staff) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff)
    return client


HUGE = 10**30  # past a bigint: Postgres refused it as OFFSET/LIMIT (500)


CASES = [  # (query, expected status)
    ({"limit": HUGE}, 200),
    ({"limit": 2**63}, 200),
    ({"offset": HUGE}, 400),
    ({"offset": MAX_OFFSET + 1}, 400),
    ({"offset": -1}, 200),
    ({"limit": -5, "offset": "x"}, 200),
    ({"limit": HUGE, "offset": HUGE}, 400),
]


@pytest.mark.parametrize("route", LIST_ROUTES)
def test_list_endpoints_bound_limit_and_offset(staff_client, objects, route):
    wrong = []
    for query, expected in CASES:
        response = staff_client.get(url_of(route, objects), query)
        if response.status_code != expected:
            wrong.append((query, response.status_code, response.content[:200]))
        elif expected == 400 and "offset" not in response.json():
            wrong.append((query, "no field detail", response.json()))
        elif expected == 200 and len(response.json()["results"]) > MAX_LIMIT:
            wrong.append((query, "page over the cap", len(response.json()["results"])))
    assert wrong == [], (route, wrong)


def test_a_capped_limit_still_pages_through_every_row(staff_client, objects):
    body = staff_client.get("/api/v1/models/cancer/versions/", {"limit": HUGE}).json()
    assert body["count"] == 2 and len(body["results"]) == 2


NUMBERS = st.one_of(st.integers(), st.integers(min_value=2**62), st.integers(max_value=-(2**62)), st.text(max_size=30))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=NUMBERS, offset=NUMBERS)
def test_any_limit_and_offset_answer_a_page_or_a_400(staff_client, objects, limit, offset):
    response = staff_client.get("/api/v1/models/cancer/events/", {"limit": limit, "offset": offset})
    assert response.status_code in (200, 400), (limit, offset, response.content[:300])
