"""Bad input answers 400 with field-level detail and stores nothing: no version row, no file, no event."""

from __future__ import annotations

import io
import json
import pickle

import joblib
import pytest

from registry.models import ModelVersion, RegistryEvent
from tests.conftest import stored_files, upload

pytestmark = pytest.mark.django_db


def post_version(api, artifact: bytes, name: str = "model.skops", **fields):
    data = {"artifact": upload(artifact, name)}
    for key, value in fields.items():
        data[key] = upload(value, "eval.csv") if key == "evaluation_data" else value
    return api.post("/api/v1/models/cancer/versions/", data, format="multipart")


def assert_refused(response, field: str, words: str, artifact_root) -> None:
    assert response.status_code == 400, response.content
    detail = response.json()
    assert field in detail, detail
    assert words in " ".join(detail[field]), detail
    assert ModelVersion.objects.count() == 0
    assert RegistryEvent.objects.exclude(action="model.created").count() == 0
    assert stored_files(artifact_root) == []


def test_empty_file(api, classifier_model, artifact_root):
    assert_refused(post_version(api, b""), "artifact", "empty", artifact_root)


def test_truncated_file(api, classifier_model, logreg, artifact_root):
    truncated = logreg.artifact[: len(logreg.artifact) // 2]
    assert_refused(post_version(api, truncated), "artifact", "damaged or truncated", artifact_root)


def test_unknown_format(api, classifier_model, artifact_root):
    assert_refused(post_version(api, b"hello, I am a text file", "model.txt"), "artifact", "unknown", artifact_root)
    assert_refused(post_version(api, b"x", format="tensorflow"), "format", "valid choice", artifact_root)


def test_pickle_is_refused_while_not_trusted(api, classifier_model, logreg, artifact_root):
    buffer = io.BytesIO()
    joblib.dump(logreg.estimator, buffer)
    assert_refused(post_version(api, buffer.getvalue(), "model.joblib"), "artifact", "refused", artifact_root)
    # A pickle disguised with a .skops name is still recognised and refused.
    disguised = pickle.dumps(logreg.estimator)
    assert_refused(post_version(api, disguised, "model.skops"), "artifact", "pickle", artifact_root)


def test_pickle_is_accepted_when_the_deployment_trusts_it(api, classifier_model, logreg, settings):
    settings.MODELWORKS_TRUST_PICKLE = True
    buffer = io.BytesIO()
    joblib.dump(logreg.estimator, buffer)
    response = post_version(api, buffer.getvalue(), "model.joblib", evaluation_data=logreg.eval_csv)
    assert response.status_code == 201, response.content
    assert response.json()["format"] == "joblib"


def test_skops_file_with_untrusted_types_is_refused(api, classifier_model, artifact_root):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    dangerous = sio.dumps(FunctionTransformer(func=eval))  # noqa: S307 - never called: that is the point
    assert_refused(post_version(api, dangerous), "artifact", "not trusted", artifact_root)


def test_file_over_the_size_limit(api, classifier_model, logreg, settings, artifact_root):
    settings.MODELWORKS_MAX_ARTIFACT_MB = 1
    big = logreg.artifact + b"\0" * (1024 * 1024)
    assert_refused(post_version(api, big), "artifact", "limit is 1 MB", artifact_root)


def test_signature_with_the_wrong_feature_count(api, classifier_model, logreg, artifact_root):
    signature = {"inputs": [{"name": c, "dtype": "float"} for c in logreg.X_test.columns[:5]]}
    response = post_version(api, logreg.artifact, signature=json.dumps(signature))
    assert_refused(response, "signature", "takes 30 features but the signature declares 5", artifact_root)


def test_signature_with_the_wrong_names_or_classes(api, classifier_model, logreg, artifact_root):
    inputs = [{"name": c, "dtype": "float"} for c in logreg.X_test.columns]
    renamed = [{**inputs[0], "name": "radius"}, *inputs[1:]]
    response = post_version(api, logreg.artifact, signature=json.dumps({"inputs": renamed}))
    assert_refused(response, "signature", "'mean radius' in the model but 'radius'", artifact_root)
    wrong_classes = {"inputs": inputs, "outputs": {"classes": ["benign", "malignant"]}}
    response = post_version(api, logreg.artifact, signature=json.dumps(wrong_classes))
    assert_refused(response, "signature", "predicts classes [0, 1]", artifact_root)


def test_malformed_signature(api, classifier_model, logreg, artifact_root):
    response = post_version(api, logreg.artifact, signature=json.dumps({"inputs": [{"name": "a", "dtype": "str"}]}))
    assert_refused(response, "signature", "is not one of", artifact_root)
    assert_refused(post_version(api, logreg.artifact, signature="{not json"), "signature", "JSON", artifact_root)


def test_a_regressor_registered_on_a_classification_model(api, classifier_model, ridge, artifact_root):
    assert_refused(post_version(api, ridge.artifact), "signature", "is a regressor", artifact_root)


def test_evaluation_data_without_the_target_or_features(api, classifier_model, logreg, artifact_root):
    no_target = logreg.X_test.to_csv(index=False).encode()
    response = post_version(api, logreg.artifact, evaluation_data=no_target)
    assert_refused(response, "evaluation_data", "no target column", artifact_root)
    missing = logreg.X_test.iloc[:, :3].assign(target=logreg.y_test).to_csv(index=False).encode()
    response = post_version(
        api,
        logreg.artifact,
        evaluation_data=missing,
        signature=json.dumps({"inputs": [{"name": c} for c in logreg.X_test.columns]}),
    )
    assert_refused(response, "evaluation_data", "lacks the features", artifact_root)


def test_metrics_that_are_not_numbers(api, classifier_model, logreg, artifact_root):
    response = post_version(api, logreg.artifact, metrics=json.dumps({"accuracy": "high"}))
    assert_refused(response, "metrics", "'accuracy' must be a number", artifact_root)


def test_duplicate_alias(api, classifier_model, logreg):
    assert post_version(api, logreg.artifact, evaluation_data=logreg.eval_csv).status_code == 201
    first = api.post("/api/v1/models/cancer/aliases/", {"alias": "champion", "version": 1}, format="json")
    assert first.status_code == 201
    again = api.post("/api/v1/models/cancer/aliases/", {"alias": "champion", "version": 1}, format="json")
    assert again.status_code == 400 and "already exists" in again.json()["alias"][0]
    assert RegistryEvent.objects.filter(action="alias.created").count() == 1


def test_alias_to_a_missing_version_or_with_a_bad_name(api, classifier_model, logreg):
    assert post_version(api, logreg.artifact, evaluation_data=logreg.eval_csv).status_code == 201
    missing = api.post("/api/v1/models/cancer/aliases/", {"alias": "champion", "version": 7}, format="json")
    assert missing.status_code == 400 and "no version 7" in missing.json()["version"][0]
    bad = api.post("/api/v1/models/cancer/aliases/", {"alias": "Bad Name!", "version": 1}, format="json")
    assert bad.status_code == 400 and "alias" in bad.json()


def test_duplicate_or_invalid_model(api, classifier_model):
    again = api.post("/api/v1/models/", {"name": "cancer", "task": "classification"}, format="json")
    assert again.status_code == 400 and "already exists" in again.json()["name"][0]
    bad = api.post("/api/v1/models/", {"name": "Not a slug", "task": "clustering"}, format="json")
    assert bad.status_code == 400 and set(bad.json()) == {"name", "task"}
