"""URLs that forgive (config/forgiving_urls.py): every API route answers the same with or without its trailing slash,
never with a redirect or a 500, and an unknown /api/ or /v2/ path answers a JSON 404, with DEBUG on as off."""

from __future__ import annotations

import json
import re

import pytest
from django.db import transaction
from django.test import Client
from django.urls import NoReverseMatch, URLPattern, URLResolver, get_resolver, reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.forgiving_urls import is_api_path, resolves, toggled

pytestmark = pytest.mark.django_db

SLUG = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True)
# A strategy and a sample value per kind of path parameter: Django's converters, and the hot path's re_path groups.
KINDS = {"int": st.integers(1, 2**31 - 1), "slug": SLUG, "string": SLUG, "path": SLUG, "name": SLUG,
         "version": st.integers(1, 1000)}  # fmt: skip
SAMPLES = {"int": 1, "slug": "x1", "string": "x1", "path": "x1", "name": "x1", "version": 1}


def _routes(patterns, namespace: str | None = None) -> list[tuple[str, dict[str, str]]]:
    """Every named route of the URLconf as (its reverse() name, the kind of each parameter)."""
    found = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            found += _routes(pattern.url_patterns, pattern.namespace or namespace)
        elif isinstance(pattern, URLPattern) and pattern.name:
            converters = getattr(pattern.pattern, "converters", {})
            if converters:
                params = {key: type(c).__name__.removesuffix("Converter").lower() for key, c in converters.items()}
            else:
                params = {key: key for key in pattern.pattern.regex.groupindex}  # re_path: named for their kind
            found.append((f"{namespace}:{pattern.name}" if namespace else pattern.name, params))
    return found


def api_routes() -> list[tuple[str, dict[str, str]]]:
    """The routes under /api/ and /v2/ (their canonical spelling decides), each also without its parameters when
    they are optional (/invocations beside /api/v1/models/{name}/invocations)."""
    routes = []
    for name, params in _routes(get_resolver().url_patterns):
        if not set(params.values()) <= SAMPLES.keys():
            assert name.startswith("admin:"), f"{name}: a parameter of a kind this test does not know"
            continue  # the admin's regex routes (app_label, object_id): not the API's
        for variant in (params, {}) if params else (params,):
            try:
                path = reverse(name, kwargs={key: SAMPLES[kind] for key, kind in variant.items()})
            except NoReverseMatch:
                continue
            if is_api_path(path):
                routes.append((name, variant))
    return routes


ROUTES = api_routes()


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def answer(client: Client, method: str, path: str):
    """The answer to one request, its effects rolled back (so both spellings meet the same state)."""
    with transaction.atomic():
        response = client.generic(method, path, b"", content_type="application/json")
        transaction.set_rollback(True)
    return response


def test_the_urlconf_is_enumerated():
    names = {name for name, _ in ROUTES}
    assert {"model-list", "monitor-list", "predict", "invocations", "v2-infer", "v2-server"} <= names
    assert len(names) >= 40


def assert_both_spellings_agree(client: Client, canonical: str) -> None:
    other = toggled(canonical)
    for method in ("GET", "POST"):
        first, second = answer(client, method, canonical), answer(client, method, other)
        assert first.status_code not in (301, 302, 500), (method, canonical, first.status_code)
        assert second.status_code == first.status_code, (method, canonical, other, first.content[:300])


def test_every_api_route_without_parameters_answers_the_same_with_or_without_its_slash(staff_client, settings):
    settings.DEBUG = True  # where CommonMiddleware raises for a POST it would redirect
    for name, params in ROUTES:
        if not params:
            assert_both_spellings_agree(staff_client, reverse(name))


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_api_route_with_parameters_answers_the_same_with_or_without_its_slash(staff_client, settings, data):
    settings.DEBUG = True
    for name, params in ROUTES:
        if params:
            kwargs = {key: data.draw(KINDS[kind], label=f"{name}.{key}") for key, kind in params.items()}
            assert_both_spellings_agree(staff_client, reverse(name, kwargs=kwargs))


UNKNOWN = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["/api/", "/v2/", "/api/v1/", "/api/v1/models/cancer/", "/v2/models/x/"]),
    st.text(st.sampled_from("abcxyz019-_./~"), min_size=1, max_size=24),
).filter(lambda path: not resolves(path) and not resolves(toggled(path)))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=UNKNOWN, method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]), debug=st.booleans())
def test_unknown_api_paths_answer_a_json_404(client, settings, path, method, debug):
    settings.DEBUG = debug
    response = client.generic(method, path, b"{}", content_type="application/json")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": f"no such endpoint: {method} {response.wsgi_request.path}"}


def test_a_post_without_the_slash_creates(staff_client, settings):
    settings.DEBUG = True
    body = json.dumps({"name": "churn", "task": "classification"})
    response = staff_client.post("/api/v1/models", body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert staff_client.get("/api/v1/models/churn").json()["name"] == "churn"
    assert staff_client.get("/api/v1/monitors/").status_code == 200  # and a slash where there is none


def test_a_wrong_method_stays_drfs_405_and_the_admin_keeps_djangos_ways(staff_client, settings):
    settings.DEBUG = True
    wrong = staff_client.delete("/api/v1/models")
    assert wrong.status_code == 405 and wrong.json() == {"detail": 'Method "DELETE" not allowed.'}
    admin = staff_client.get("/admin")
    assert admin.status_code == 301 and admin["Location"] == "/admin/"
    assert re.search(r"text/html", staff_client.get("/nowhere/").get("Content-Type", ""))
