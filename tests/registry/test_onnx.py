"""ONNX artifacts: regressors register and serve like classifiers do; external data (a file path) never loads."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from onnx import TensorProto, helper
from skl2onnx import to_onnx

from registry import services
from registry.artifacts import ArtifactError, load_model
from registry.models import ModelVersion
from serving.keys import api_key_create
from tests.conftest import upload
from tests.serving import conftest as serving
from tests.serving.conftest import post, rows_of

pytestmark = pytest.mark.django_db
fresh_serving_state = serving.fresh_serving_state  # empty caches and a prediction log that flushes only on demand

SECRET = b"SECRET=hunter2-0123456789abcdef"


def test_an_onnx_regressor_registers_and_serves_like_the_original(api, regressor_model, ridge, client):
    onnx_bytes = to_onnx(ridge.estimator, ridge.X_test.to_numpy()[:1].astype(np.float32)).SerializeToString()
    response = api.post(
        "/api/v1/models/diabetes/versions/",
        {"artifact": upload(onnx_bytes, "diabetes.onnx"), "evaluation_data": upload(ridge.eval_csv, "eval.csv")},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    version = ModelVersion.objects.get()
    assert version.format == "onnx" and version.status == "validated", version.gate_report
    services.alias_create(model=regressor_model, name="production", version=version)

    key = api_key_create(name="test", scopes=["predict:diabetes"])[1]
    answer = post(client, "/api/v1/models/diabetes/predict", {"instances": rows_of(ridge.X_test, 5)},
                  HTTP_AUTHORIZATION=f"Api-Key {key}")  # fmt: skip
    assert answer.status_code == 200, answer.content
    expected = ridge.estimator.predict(ridge.X_test.head(5))
    assert np.allclose(answer.json()["predictions"], expected, rtol=1e-4)


def _external(name: str, location: str, features: int) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[1, features])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": str(4 * features)}.items():
        tensor.external_data.add(key=key, value=value)
    return tensor


def onnx_reading(location: str, hidden_in: str = "constant", features: int = 4) -> bytes:
    """A model whose predictions are X + the first bytes of the file at `location` read as floats ("external data"),
    the tensor held as a graph initializer or as a Constant node in an If's branch (which onnxruntime 1.32 loads)."""
    X = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, features])
    Y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, features])
    if hidden_in == "initializer":
        nodes, initializers = (
            [helper.make_node("Add", ["X", "stolen"], ["Y"])],
            [_external("stolen", location, features)],
        )
    else:
        constant = helper.make_node("Constant", [], ["C"], value=_external("stolen", location, features))
        branch = helper.make_graph(
            [constant], "branch", [], [helper.make_tensor_value_info("C", TensorProto.FLOAT, None)]
        )
        nodes = [
            helper.make_node("If", ["yes"], ["Z"], then_branch=branch, else_branch=branch),
            helper.make_node("Add", ["X", "Z"], ["Y"]),
        ]
        initializers = [helper.make_tensor("yes", TensorProto.BOOL, [], [True])]
    graph = helper.make_graph(nodes, "g", [X], [Y], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture
def secret_file(tmp_path, monkeypatch):
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret.txt").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)  # the web process's working directory, which onnxruntime would read relative to
    return tmp_path / "var" / "secret.txt"


@pytest.mark.parametrize("hidden_in", ["constant", "initializer"])
@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_onnx_with_external_data_is_refused_at_registration(api, regressor_model, secret_file, where, hidden_in):
    location = "var/secret.txt" if where == "relative" else str(secret_file)
    response = api.post(
        "/api/v1/models/diabetes/versions/",
        {"artifact": upload(onnx_reading(location, hidden_in), "stolen.onnx")},
        format="multipart",
    )
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["artifact"])
    assert "external data" in message and "stolen" in message, message
    assert ModelVersion.objects.count() == 0


@pytest.mark.parametrize("hidden_in", ["constant", "initializer"])
def test_a_stored_onnx_artifact_with_external_data_is_never_loaded(secret_file, hidden_in):
    with pytest.raises(ArtifactError, match="external data"):
        load_model(onnx_reading("var/secret.txt", hidden_in), "onnx")


def test_bytes_that_are_not_an_onnx_model_are_refused_with_a_reason(regressor_model):
    with pytest.raises(ValidationError, match="ONNX"):
        services.model_version_register(model=regressor_model, artifact=b"\x08\x07garbage", filename="m.onnx")
