"""What the ASGI front (serving/front.py) applies to every answer it gives itself, as Django does for its own:
every answer counted in the metrics, and the security policy of Django's SecurityMiddleware."""

from __future__ import annotations

import io
import json

import pytest
from a2wsgi.wsgi import build_environ
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.test import Client, override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from serving.front import request_processor, security_policy
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


SECURITY_HEADERS = ("strict-transport-security", "x-content-type-options", "referrer-policy",
                    "cross-origin-opener-policy")  # fmt: skip
TLS = {
    "SECURE_SSL_REDIRECT": True,
    "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
    "SECURE_HSTS_SECONDS": 31_536_000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SECURE_HSTS_PRELOAD": True,
}


def security(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name in SECURITY_HEADERS}


def security_of(django_headers: dict[str, str]) -> dict[str, str]:
    """The same, from a Django test client's response (header names as Django spells them)."""
    return security({name.lower(): value for name, value in django_headers.items()})


def test_over_http_a_prediction_gets_the_redirect_django_gives(production, key, logreg, settings):
    for name, value in TLS.items():
        setattr(settings, name, value)
    body, headers = predict_body(rows_of(logreg.X_test, 1)), {"Authorization": f"Api-Key {key}"}
    status, answer, _ = call("POST", URL, body, headers, query="version=1")
    django = Client().post(f"{URL}?version=1", body, content_type="application/json", headers=headers)
    assert (status, django.status_code) == (301, 301)
    assert answer["location"] == django["location"] == "https://testserver/api/v1/models/cancer/predict?version=1"
    assert security(answer) == security_of(dict(django.headers)) and "strict-transport-security" not in answer
    assert answered("predict", 301) >= 1
    status, answer, _ = call("POST", "/v2/models/cancer/infer", b"{}", {"X-Api-Key": key})
    assert status == 301 and answer["location"] == "https://testserver/v2/models/cancer/infer"
    # SECURE_REDIRECT_EXEMPT holds for the front as for Django: answered over http, and without HSTS.
    settings.SECURE_REDIRECT_EXEMPT = [*settings.SECURE_REDIRECT_EXEMPT, r"^api/v1/models/[^/]+/predict$"]
    status, answer, content = call("POST", URL, body, headers)
    assert status == 200 and json.loads(content)["predictions"]
    assert "strict-transport-security" not in answer and answer["x-content-type-options"] == "nosniff"


def test_over_https_a_prediction_carries_the_hsts_and_policy_headers_of_a_django_page(
    production, key, logreg, settings
):
    for name, value in TLS.items():
        setattr(settings, name, value)
    https = {"X-Forwarded-Proto": "https"}
    status, answer, _ = call("POST", URL, predict_body(rows_of(logreg.X_test, 1)),
                             {"Authorization": f"Api-Key {key}", **https})  # fmt: skip
    page = dict(Client().get("/healthz", headers=https).headers)
    assert status == 200
    assert answer["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    assert security(answer) == security_of(page) and len(security(answer)) == 4
    status, answer, _ = call("POST", "/v2/models/cancer/infer", b"{}", {"X-Api-Key": "mw_unknown", **https})
    assert status == 401 and security(answer) == security_of(page)  # errors the front answers carry them too


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(proto=st.none() | st.text(st.sampled_from("htps, \tHTPS"), max_size=16))
def test_the_front_and_django_agree_on_which_requests_are_secure(proto):
    """For any X-Forwarded-Proto a client sends (several are one, comma-joined, to Django), the front redirects, or
    adds HSTS, exactly when Django does."""
    headers = {} if proto is None else {"X-Forwarded-Proto": proto}
    with override_settings(**TLS):
        front = call("POST", "/v2/models/cancer/infer", b"{}", {"X-Api-Key": "mw_unknown", **headers})
        django = Client().get("/api/v1/models/", headers=headers)
    assert (front[0] == 301) == (django.status_code == 301), (front[0], django.status_code)
    assert security(front[1]) == security_of(dict(django.headers))
    if front[0] == 301:
        assert front[1]["location"] == "https://testserver/v2/models/cancer/infer"


HEADER_NAMES = [b"x-forwarded-proto", b"X-Forwarded-Proto", b"x_forwarded_proto", b"x-forwarded-protocol", b"host"]


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.binary(max_size=12)), max_size=4),
    scheme=st.sampled_from(["http", "https"]),
    proxied=st.booleans(),
)
def test_the_fronts_scheme_check_reads_the_request_as_django_behind_a2wsgi_does(headers, scheme, proxied):
    """The front reads only the proxy header out of the request; Django (under a2wsgi) reads the whole environ: for
    any headers, repeated, in any spelling a2wsgi maps to the same name, both see the same scheme."""
    scope = {"type": "http", "method": "POST", "path": URL, "root_path": "", "query_string": b"", "scheme": scheme,
             "http_version": "1.1", "headers": headers, "server": ("testserver", 80)}  # fmt: skip
    with override_settings(**TLS | ({} if proxied else {"SECURE_PROXY_SSL_HEADER": None})):
        environ = build_environ(scope, None)
        environ["wsgi.input"] = io.BytesIO()
        request = WSGIRequest(environ)
        django = request.is_secure()
        front = security_policy(scope)
        if front is None:  # left to Django: a redirect to a Host it refuses
            assert not django
            with pytest.raises(DisallowedHost):
                request.get_host()
            return
        assert (front[1] is None) == django  # redirected exactly when not secure (nothing here is exempt)
        assert any(name == b"strict-transport-security" for name, _ in front[0]) == django
