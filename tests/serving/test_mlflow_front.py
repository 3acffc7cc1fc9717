"""MLflow's scoring requests through the ASGI front (serving/front.py), as deployed: answered by the request processor
in its rounds, batched with /predict's, and equal to the Django view's answers."""

from __future__ import annotations

import json

import pytest

from serving.front import request_processor
from serving.prediction_log import prediction_log
from tests.serving.conftest import post, rows_of
from tests.serving.test_front import call, call_all

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def processor_lets_go_of_the_database():
    yield
    request_processor().close_connections()  # or the test database cannot be dropped at the end


def test_mlflow_and_native_requests_share_the_front_its_answers_and_errors(production, key, caller, logreg):
    frame = logreg.X_test.head(6)
    expected = logreg.estimator.predict(frame).tolist()
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
    split = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
    native = json.dumps({"instances": rows_of(frame, 6)}).encode()
    answers = call_all(
        [
            ("POST", "/api/v1/models/cancer/invocations", split, {**headers, "X-Request-ID": "front-mlflow"}),
            ("POST", "/invocations/", split, headers),
            ("POST", "/api/v1/models/cancer/predict/", native, headers),
            ("POST", "/api/v1/models/cancer/invocations", frame.to_csv(index=False).encode(),
             {**headers, "Content-Type": "text/csv"}),
        ]
    )  # fmt: skip
    assert [status for status, _, _ in answers] == [200] * 4, answers
    scored = [json.loads(content) for _, _, content in answers]
    assert scored[0] == scored[1] == scored[3] == {"predictions": expected}
    assert scored[2]["predictions"] == expected
    assert answers[0][1]["x-request-id"] == "front-mlflow"
    assert "front-mlflow" in {entry.request_id for entry in list(prediction_log()._rows)}
    django = post(caller, "/api/v1/models/cancer/invocations", {"dataframe_split": frame.to_dict(orient="split")})
    assert django.json() == scored[0]
    # and its errors in MLflow's shape (one test: each transactional test costs a second or two of teardown)
    body = json.dumps({"inputs": logreg.X_test.head(1).to_numpy().tolist()}).encode()
    status, headers, content = call("POST", "/invocations", body, {"Authorization": "Api-Key nope"})
    assert status == 401 and headers["www-authenticate"] == "Api-Key"
    assert json.loads(content)["error_code"] == "UNAUTHENTICATED"
    auth = {"Authorization": f"Api-Key {key}"}
    status, _, content = call("POST", "/api/v1/models/cancer/invocations", b'{"records": []}', auth)
    assert status == 400 and json.loads(content)["error_code"] == "BAD_REQUEST"
    status, _, content = call("POST", "/invocations", body, {**auth, "Content-Type": "text/csv; charset=latin-1"})
    assert status == 415 and "UTF-8" in json.loads(content)["message"]
