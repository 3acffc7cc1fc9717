"""The Open Inference Protocol (KServe V2): Triton's own HTTP client works against the platform unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from django.test import Client

from tests.platform.processes import free_port, start_gunicorn, stop, wait_for
from tests.platform.processes import request as request_
from tests.serving.conftest import post

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["django-views", "deployed-asgi-front"])
def v2(request, production, key, artifact_root, tmp_path):
    """Triton's client against Django's views (live server), and against gunicorn as deployed, where requests with
    an API key are answered by the ASGI front (serving/front.py)."""
    logs: list = []
    web = None
    if request.param == "django-views":
        address = request.getfixturevalue("live_server").url.removeprefix("http://")
    else:
        port = free_port()
        web = start_gunicorn(port, tmp_path / "web", artifact_root, logs)
        wait_for(lambda: request_(port, "GET", "/healthz")[0] == 200, 60, "gunicorn")
        address = f"127.0.0.1:{port}"
    client = triton.InferenceServerClient(url=address)
    yield client, {"Authorization": f"Api-Key {key}"}
    client.close()
    if web is not None:
        stop(web, True)
    for log in logs:
        log.close()


@pytest.mark.parametrize("binary", [True, False])
def test_triton_client_infers_with_one_tensor_per_feature(v2, logreg, binary):
    client, auth = v2
    X = logreg.X_test.head(5)
    inputs = []
    for name in X.columns:
        tensor = triton.InferInput(name, [5], "FP64")
        tensor.set_data_from_numpy(X[name].to_numpy(dtype=np.float64), binary_data=binary)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput("predict", binary_data=False),
               triton.InferRequestedOutput("predict_proba", binary_data=False)]  # fmt: skip
    result = client.infer("cancer", inputs, outputs=outputs, headers=auth, request_id="triton-1")
    assert result.as_numpy("predict").tolist() == logreg.estimator.predict(X).tolist()
    assert np.allclose(result.as_numpy("predict_proba"), logreg.estimator.predict_proba(X), rtol=0, atol=1e-12)
    assert result.get_response()["model_version"] == "1"
    assert result.get_response()["id"] == "triton-1"


def test_triton_client_reads_health_and_metadata(v2):
    client, auth = v2
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("cancer", headers=auth)
    assert client.is_model_ready("cancer", "1", headers=auth)
    metadata = client.get_model_metadata("cancer", headers=auth)
    assert metadata["inputs"][0] == {"name": "mean radius", "datatype": "FP64", "shape": [-1]}
    assert [o["name"] for o in metadata["outputs"]] == ["predict", "predict_proba"]


def test_one_matrix_tensor_in_signature_order(caller, production, logreg):
    X = logreg.X_test.head(3).to_numpy()
    body = {"inputs": [{"name": "input-0", "shape": [3, 30], "datatype": "FP64", "data": X.ravel().tolist()}]}
    response = post(caller, "/v2/models/cancer/versions/1/infer", body)
    assert response.status_code == 200, response.content
    assert response.json()["outputs"][0]["data"] == logreg.estimator.predict(logreg.X_test.head(3)).tolist()


def test_v2_errors_are_readable_and_authenticated(caller, production, logreg):
    assert Client().get("/v2/models/cancer").status_code == 401
    wrong = {"inputs": [{"name": "mean radius", "shape": [2], "datatype": "FP64", "data": [1.0]}]}
    response = post(caller, "/v2/models/cancer/infer", wrong)
    assert response.status_code == 400 and "error" in response.json()
    assert post(caller, "/v2/models/nope/infer", wrong).status_code in (403, 404)
    missing = {"inputs": [{"name": "mean radius", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    assert "is missing" in post(caller, "/v2/models/cancer/infer", missing).json()["error"]
