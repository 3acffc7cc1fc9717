"""The prediction log records who called: the API key's id or the user's id, next to the request id that joins the
log to the audit trail. Every way in: the native endpoint, V2, MLflow's invocations, the ASGI front, the console."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from serving.models import ApiKey, PredictionLog
from serving.prediction_log import prediction_log
from tests.serving.conftest import make_key, post, rows_of

URL = "/api/v1/models/cancer/predict"


def logged(request_id: str) -> PredictionLog:
    prediction_log().flush()
    return PredictionLog.objects.get(request_id=request_id)


@pytest.mark.django_db
def test_an_api_key_caller_is_logged_by_the_keys_id(production, logreg):
    raw = make_key("predict:cancer")
    key = ApiKey.objects.get(prefix=raw[:12])
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    answer = post(client, URL, {"instances": rows_of(logreg.X_test, 1)}, HTTP_X_REQUEST_ID="by-key-1")
    assert answer.status_code == 200 and answer["X-Request-ID"] == "by-key-1"
    assert logged("by-key-1").caller == f"key:{key.pk}"
    v2 = {"id": "by-key-v2", "inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP64",
                                         "data": logreg.X_test.head(1).to_numpy().ravel().tolist()}]}  # fmt: skip
    assert post(client, "/v2/models/cancer/infer", v2).status_code == 200
    assert logged("by-key-v2").caller == f"key:{key.pk}"
    invocations = post(client, "/api/v1/models/cancer/invocations", {"dataframe_records": rows_of(logreg.X_test, 1)},
                       HTTP_X_REQUEST_ID="by-key-mlflow")  # fmt: skip
    assert invocations.status_code == 200, invocations.content
    assert logged("by-key-mlflow").caller == f"key:{key.pk}"


@pytest.mark.django_db
def test_a_token_or_a_session_caller_is_logged_by_the_users_id(production, logreg, user):
    by_token = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    post(by_token, URL, {"instances": rows_of(logreg.X_test, 1)}, HTTP_X_REQUEST_ID="by-token-1")
    assert logged("by-token-1").caller == f"user:{user.pk}"
    session = Client()
    session.force_login(user)
    answer = post(session, URL, {"instances": rows_of(logreg.X_test, 1)})
    assert answer.status_code == 200
    assert logged(answer["X-Request-ID"]).caller == f"user:{user.pk}"


@pytest.mark.django_db
def test_the_consoles_try_form_logs_its_user_and_the_pages_request_id(production, logreg, staff):
    console = Client()
    console.force_login(staff)
    row = rows_of(logreg.X_test, 1)[0]
    form = {"action": "try", **{f"in_{name}": value for name, value in row.items()}}
    page = console.post("/admin/models/cancer/", form, HTTP_X_REQUEST_ID="console-try-1")
    assert page.status_code == 200 and page["X-Request-ID"] == "console-try-1"
    assert logged("console-try-1").caller == f"user:{staff.pk}"


@pytest.mark.django_db(transaction=True)
def test_the_asgi_front_logs_the_caller_it_checked(production, logreg, user):
    from tests.serving.test_front import call, predict_body

    raw = make_key("predict:*")
    key = ApiKey.objects.get(prefix=raw[:12])
    token = Token.objects.create(user=user).key
    try:
        for credential, request_id in ((f"Api-Key {raw}", "front-key"), (f"Token {token}", "front-token")):
            status, headers, content = call("POST", URL, predict_body(rows_of(logreg.X_test, 1)),
                                            {"Authorization": credential, "X-Request-ID": request_id})  # fmt: skip
            assert status == 200, content
            assert json.loads(content)["request_id"] == request_id
    finally:
        from serving.front import request_processor

        request_processor().close_connections()
    assert logged("front-key").caller == f"key:{key.pk}"
    assert logged("front-token").caller == f"user:{user.pk}"
