"""Generated bodies for the monitoring write endpoints never cause a server error (schemathesis over the schema)."""

from __future__ import annotations

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from serving.tokens import user_token_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def openapi() -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))


@pytest.mark.parametrize("path", ["/api/v1/feedback", "/api/v1/events", "/api/v1/monitors"])
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_bodies_never_produce_a_server_error(openapi, live_server, user, cancer_v1, path, data):
    auth = {"Authorization": f"Token {user_token_create(user=user)[1]}"}
    case = data.draw(openapi[path]["POST"].as_strategy())
    response = case.call_and_validate(base_url=live_server.url, headers=auth, checks=[not_a_server_error])
    assert response.status_code in (201, 202, 400, 404), response.text
