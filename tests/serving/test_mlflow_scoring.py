"""MLflow's scoring protocol (serving/mlflow.py): the bodies an MLflow scoring client sends, built with MLflow's own
REST payload conventions (mlflow.pyfunc.scoring_server, mlflow.utils.proto_json_utils.dump_input_data: a DataFrame
as `{"dataframe_split": df.to_dict(orient="split")}`, an array as `{"inputs": array.tolist()}`, params alongside),
answered `{"predictions": [...]}` with the values /predict gives, through the same hot path (auth, routing, log)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from registry import services as registry
from serving import metrics
from serving.prediction_log import prediction_log
from tests.serving.conftest import make_key, post, rows_of

pytestmark = pytest.mark.django_db
URL = "/api/v1/models/cancer/invocations"
PREDICT = "/api/v1/models/cancer/predict"


def mlflow_bodies(frame) -> dict[str, dict]:
    """The frame in each of MLflow's four formats (and the shapes `instances`/`inputs` take), as MLflow's client
    writes them: pandas' own to_dict orients, numpy's tolist, and `params` where MLflow would add them."""
    columns = {column: frame[column].tolist() for column in frame.columns}
    return {
        "dataframe_split": {"dataframe_split": frame.to_dict(orient="split")},  # with its "index"
        "dataframe_split without index": {
            "dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}
        },
        "dataframe_split without columns": {"dataframe_split": {"data": frame.to_numpy().tolist()}},
        "dataframe_records": {"dataframe_records": frame.to_dict(orient="records")},
        "instances as rows": {"instances": frame.to_numpy().tolist()},
        "instances as records": {"instances": frame.to_dict(orient="records")},
        "instances as columns": {"instances": columns},
        "inputs as a tensor": {"inputs": frame.to_numpy().tolist()},
        "inputs as columns": {"inputs": columns},
        "with params": {"dataframe_split": frame.to_dict(orient="split"), "params": {"threshold": 0.5}},
    }


def test_every_mlflow_format_answers_predictions_equal_to_predict(caller, production, logreg):
    frame = logreg.X_test.head(7)
    native = post(caller, PREDICT, {"instances": rows_of(frame, 7)}).json()
    assert native["predictions"] == logreg.estimator.predict(frame).tolist()
    for label, body in mlflow_bodies(frame).items():
        response = caller.post(URL, json.dumps(body), content_type="application/json")
        assert response.status_code == 200, (label, response.content)
        assert response.json() == {"predictions": native["predictions"]}, label
        assert response["Content-Type"] == "application/json" and response["X-Request-ID"]


def test_a_regressor_answers_its_values(regressor_model, ridge):
    version = registry.model_version_register(
        model=regressor_model, artifact=ridge.artifact, evaluation_data=ridge.eval_csv
    )
    registry.alias_create(model=regressor_model, name="production", version=version)
    caller_key = make_key("predict:diabetes")
    frame = ridge.X_test.head(4)
    body = {"dataframe_split": frame.to_dict(orient="split")}
    response = post(
        Client(HTTP_AUTHORIZATION=f"Api-Key {caller_key}"),
        "/api/v1/models/diabetes/invocations",
        body,
    )
    assert response.status_code == 200, response.content
    predictions = response.json()["predictions"]
    assert all(isinstance(p, float) for p in predictions)
    assert predictions == pytest.approx(ridge.estimator.predict(frame).tolist(), rel=1e-12)


def test_csv_like_mlflow_models_serve(caller, production, logreg):
    frame = logreg.X_test.head(5)
    response = caller.post(URL, frame.to_csv(index=False), content_type="text/csv")
    assert response.status_code == 200, response.content
    assert response.json() == {"predictions": logreg.estimator.predict(frame).tolist()}


def test_it_is_logged_counted_and_routed_as_a_prediction(caller, production, classifier_model, forest, logreg):
    v2 = registry.model_version_register(
        model=classifier_model, artifact=forest.artifact, metrics={"accuracy": 0.97, "f1": 0.99}
    )
    registry.alias_create(model=classifier_model, name="challenger", version=v2)
    frame = logreg.X_test.head(3)
    counted = _predictions_counted("cancer", "2")
    body = {"dataframe_records": frame.to_dict(orient="records"), "params": {"key": "user-7"}}
    response = caller.post(URL + "?alias=challenger", json.dumps(body), content_type="application/json",
                           HTTP_X_REQUEST_ID="mlflow-1")  # fmt: skip
    assert response.status_code == 200, response.content
    assert response.json() == {"predictions": forest.estimator.predict(frame).tolist()}
    assert response["X-Request-ID"] == "mlflow-1"
    (entry,) = [e for e in prediction_log()._rows if e.request_id == "mlflow-1"]
    assert (entry.model_name, entry.version, entry.route_reason) == ("cancer", 2, "alias:challenger")
    assert entry.routing_key == "user-7"
    assert _predictions_counted("cancer", "2") == counted + 1
    pinned = caller.post(URL + "/?version=1", json.dumps(body), content_type="application/json")  # slash forgiven
    assert pinned.json() == {"predictions": logreg.estimator.predict(frame).tolist()}


def _predictions_counted(model: str, version: str) -> float:
    return sum(
        sample.value
        for metric in metrics.PREDICTIONS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("model") == model
        and sample.labels.get("version") == version and sample.labels.get("outcome") == "ok"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([[1.0, 2.0]], "exactly one of the fields dataframe_split, dataframe_records, instances or inputs"),
        ({"data": [[1.0]]}, "got the fields 'data'"),  # MLflow 1's bare split body
        ({"instances": [[1.0]], "inputs": [[1.0]]}, "exactly one of the fields"),
        ({"dataframe_split": [[1.0]]}, "dataframe_split must be an object with 'data'"),
        ({"dataframe_split": {"columns": ["a"], "data": [[1.0]], "extra": 1}}, "got the fields"),
        ({"dataframe_split": {"columns": ["a", "b"], "data": [[1.0]]}}, "row 0 has 1 values for 2 columns"),
        ({"dataframe_records": {"a": 1.0}}, "dataframe_records must be a list of records"),
        ({"instances": []}, "instances holds no rows"),
        ({"inputs": {"a": [1.0, 2.0], "b": [1.0]}}, "must have the same number of values"),
        ({"instances": 3}, "instances must be a list of rows or an object of columns"),
        ({"inputs": [[1.0, 2.0]], "params": {"key": ["x"]}}, "params.key must be a string"),
    ],
)
def test_bodies_that_are_no_mlflow_format_answer_mlflows_error_shape(caller, body, message):
    response = post(caller, URL, body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["error_code"] == "BAD_REQUEST" and message in answer["message"], answer


def test_values_the_signature_refuses_name_the_row_and_field(caller, production, logreg):
    records = rows_of(logreg.X_test, 2)
    records[1]["mean radius"] = "big"
    response = post(caller, URL, {"dataframe_records": records})
    assert response.status_code == 400
    answer = response.json()
    assert answer["error_code"] == "BAD_REQUEST"
    assert "row 1, mean radius: must be a number, got str" in answer["message"]
    assert answer["errors"] == [{"row": 1, "field": "mean radius", "message": "must be a number, got str"}]
    native = post(caller, PREDICT, {"instances": records}).json()
    assert answer["errors"] == native["errors"]  # the same validation, the same detail
    assert caller.post(URL, b"{not json", content_type="application/json").json()["error_code"] == "BAD_REQUEST"


def test_credentials_and_unknown_models_answer_in_mlflows_shape(client, caller, production, logreg):
    body = {"inputs": logreg.X_test.head(1).to_numpy().tolist()}
    anonymous = post(client, URL, body)
    assert anonymous.status_code == 401 and anonymous.json()["error_code"] == "UNAUTHENTICATED"
    assert anonymous["WWW-Authenticate"] == "Api-Key"
    other = post(caller, "/api/v1/models/other/invocations", body)
    assert other.status_code == 403 and other.json()["error_code"] == "PERMISSION_DENIED"
    wide = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('predict:*')}")
    missing = post(wide, "/api/v1/models/other/invocations", body)
    assert missing.status_code == 404
    assert missing.json() == {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no model named 'other'"}
    assert client.get(URL).json()["error_code"] == "BAD_REQUEST"  # 405: POST only
    assert client.get(URL).status_code == 405


def test_root_invocations_scores_the_only_model(caller, production, logreg):
    frame = logreg.X_test.head(3)
    response = post(caller, "/invocations", {"dataframe_split": frame.to_dict(orient="split")})
    assert response.status_code == 200, response.content
    assert response.json() == {"predictions": logreg.estimator.predict(frame).tolist()}


def test_root_invocations_with_several_models_names_how_to_choose(
    caller, production, regressor_model, logreg, settings
):
    body = {"inputs": logreg.X_test.head(2).to_numpy().tolist()}
    wide = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key('predict:*')}")
    answer = post(wide, "/invocations", body)
    assert answer.status_code == 404
    message = answer.json()["message"]
    assert "(cancer, diabetes)" in message and "MODELWORKS_DEFAULT_MODEL" in message
    assert "/api/v1/models/<name>/invocations" in message
    narrow = post(caller, "/invocations", body).json()  # a key for one model is not told the others' names
    assert narrow["error_code"] == "RESOURCE_DOES_NOT_EXIST" and "diabetes" not in narrow["message"]
    settings.MODELWORKS_DEFAULT_MODEL = "cancer"
    chosen = post(caller, "/invocations/", body)
    assert chosen.status_code == 200, chosen.content
    assert chosen.json() == {"predictions": logreg.estimator.predict(logreg.X_test.head(2)).tolist()}
