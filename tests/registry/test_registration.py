"""Registering versions: signatures, metrics computed with sklearn, quality gates, statuses and events."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from django.core.exceptions import ValidationError
from sklearn import metrics as skm

from registry import services
from registry.models import ModelVersion, RegistryEvent

pytestmark = pytest.mark.django_db


def test_signature_is_inferred_from_the_model_and_evaluation_data(classifier_model, logreg):
    version = services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    names = [f["name"] for f in version.signature["inputs"]]
    assert names == list(logreg.X_test.columns)
    assert {f["dtype"] for f in version.signature["inputs"]} == {"float"}
    assert version.signature["outputs"]["classes"] == [0, 1]
    assert version.format == "skops"
    assert version.library_versions["scikit-learn"] == sklearn.__version__
    assert version.version == 1


def test_classification_gate_metrics_equal_sklearns_own(classifier_model, logreg):
    version = services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    predicted = logreg.estimator.predict(logreg.X_test)
    scores = logreg.estimator.predict_proba(logreg.X_test)[:, 1]
    expected = {
        "accuracy": skm.accuracy_score(logreg.y_test, predicted),
        "precision": skm.precision_score(logreg.y_test, predicted),
        "recall": skm.recall_score(logreg.y_test, predicted),
        "f1": skm.f1_score(logreg.y_test, predicted),
        "roc_auc": skm.roc_auc_score(logreg.y_test, scores),
    }
    report = version.gate_report
    assert report["metrics_source"] == "computed"
    assert report["metrics"] == pytest.approx(expected, abs=1e-12)
    assert version.status == "validated"
    assert report["rules"][0]["actual"] == pytest.approx(expected["accuracy"])


def test_multiclass_metrics_use_macro_averages(db):
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    estimator = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    model = services.registered_model_create(name="iris", task="classification")
    csv = X[1::2].assign(target=y[1::2]).to_csv(index=False).encode()
    version = services.model_version_register(model=model, artifact=sio.dumps(estimator), evaluation_data=csv)
    predicted = estimator.predict(X[1::2])
    assert version.gate_report["metrics"]["f1"] == pytest.approx(skm.f1_score(y[1::2], predicted, average="macro"))
    assert version.gate_report["metrics"]["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y[1::2], estimator.predict_proba(X[1::2]), multi_class="ovr")
    )
    assert version.signature["outputs"]["classes"] == [0, 1, 2]


def test_regression_gate_metrics_equal_sklearns_own(regressor_model, ridge):
    version = services.model_version_register(
        model=regressor_model, artifact=ridge.artifact, evaluation_data=ridge.eval_csv
    )
    predicted = ridge.estimator.predict(ridge.X_test)
    assert version.gate_report["metrics"] == pytest.approx(
        {
            "mae": skm.mean_absolute_error(ridge.y_test, predicted),
            "rmse": np.sqrt(skm.mean_squared_error(ridge.y_test, predicted)),
            "r2": skm.r2_score(ridge.y_test, predicted),
        }
    )
    assert version.status == "validated"


def test_a_failing_gate_rejects_with_one_reason_per_rule(db, ridge):
    model = services.registered_model_create(
        name="strict", task="regression", gate_rules=["rmse <= 10", "r2 >= 0.99", "mae <= 1000"]
    )
    version = services.model_version_register(model=model, artifact=ridge.artifact, evaluation_data=ridge.eval_csv)
    assert version.status == "rejected"
    failed = [r for r in version.gate_report["rules"] if not r["passed"]]
    assert [r["rule"] for r in failed] == ["rmse <= 10", "r2 >= 0.99"]
    assert all("required" in r["reason"] for r in failed)
    assert RegistryEvent.objects.filter(version=version, action="version.rejected").exists()


def test_a_rejected_version_can_never_get_traffic(db, ridge):
    model = services.registered_model_create(name="strict", task="regression", gate_rules=["rmse <= 1"])
    version = services.model_version_register(model=model, artifact=ridge.artifact, evaluation_data=ridge.eval_csv)
    with pytest.raises(ValidationError) as caught:
        services.alias_create(model=model, name="production", version=version)
    assert "rejected" in str(caught.value.message_dict["version"])
    assert not model.aliases.exists()


def test_relative_gate_compares_with_the_production_version(classifier_model, logreg, forest):
    first = services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    relative = first.gate_report["rules"][1]
    assert relative["passed"] and "no production version" in relative["reason"]
    services.alias_create(model=classifier_model, name="production", version=first)

    # A candidate submitted with worse metrics than production minus the margin is rejected.
    production_f1 = first.gate_report["metrics"]["f1"]
    worse = services.model_version_register(
        model=classifier_model, artifact=forest.artifact, metrics={"accuracy": 0.95, "f1": production_f1 - 0.02}
    )
    rule = worse.gate_report["rules"][1]
    assert worse.status == "rejected"
    assert rule["threshold"] == pytest.approx(production_f1 - 0.01)
    better = services.model_version_register(
        model=classifier_model, artifact=forest.artifact, metrics={"accuracy": 0.95, "f1": production_f1}
    )
    assert better.status == "validated"


def test_without_evaluation_data_the_submitted_metrics_are_used_and_the_report_says_so(classifier_model, logreg):
    version = services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, metrics={"accuracy": 0.5}
    )
    assert version.gate_report["metrics_source"] == "submitted"
    assert "unverified" in version.gate_report["note"]
    assert version.status == "rejected"


def test_a_metric_the_gate_needs_but_nobody_gave_fails_the_gate(classifier_model, logreg):
    version = services.model_version_register(model=classifier_model, artifact=logreg.artifact)
    assert version.status == "rejected"
    assert "not available" in version.gate_report["rules"][0]["reason"]


def test_moving_production_archives_the_old_version_and_records_events(classifier_model, logreg, forest):
    v1 = services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, metrics={"accuracy": 0.95, "f1": 0.95}
    )
    services.alias_create(model=classifier_model, name="production", version=v1)
    v2 = services.model_version_register(
        model=classifier_model, artifact=forest.artifact, metrics={"accuracy": 0.96, "f1": 0.99}
    )
    services.alias_move(model=classifier_model, name="production", version=v2)
    statuses = dict(ModelVersion.objects.filter(model=classifier_model).values_list("version", "status"))
    assert statuses == {1: "archived", 2: "production"}
    moved = RegistryEvent.objects.get(model=classifier_model, action="alias.moved")
    assert moved.before == {"alias": "production", "version": 1}
    assert moved.after == {"alias": "production", "version": 2}


def test_signature_given_by_the_user_is_kept_with_its_constraints(classifier_model, logreg):
    inputs = [{"name": c, "dtype": "float", "min": 0} for c in logreg.X_test.columns]
    inputs[0]["pii"] = True
    version = services.model_version_register(
        model=classifier_model, artifact=logreg.artifact, signature={"inputs": inputs}, metrics={"accuracy": 1.0}
    )
    assert version.signature["inputs"][0] == {
        "name": "mean radius",
        "dtype": "float",
        "nullable": False,
        "pii": True,
        "min": 0,
    }
    assert version.signature["outputs"]["classes"] == [0, 1]


def test_onnx_artifacts_load_and_predict_like_the_original(classifier_model, logreg):
    from skl2onnx import to_onnx

    from registry.artifacts import load_model

    onnx_bytes = to_onnx(logreg.estimator, logreg.X_test.to_numpy()[:1].astype(np.float32)).SerializeToString()
    version = services.model_version_register(
        model=classifier_model,
        artifact=onnx_bytes,
        filename="cancer.onnx",
        signature={"inputs": [{"name": c, "dtype": "float"} for c in logreg.X_test.columns]},
        evaluation_data=logreg.eval_csv,
    )
    assert version.format == "onnx"
    assert version.signature["outputs"]["classes"] == [0, 1]
    loaded = load_model(onnx_bytes, "onnx")
    X = logreg.X_test.to_numpy()
    assert (loaded.predict(X) == logreg.estimator.predict(logreg.X_test)).mean() > 0.99
    assert np.allclose(loaded.predict_proba(X), logreg.estimator.predict_proba(logreg.X_test), atol=1e-4)
    assert version.gate_report["metrics"]["accuracy"] == pytest.approx(
        skm.accuracy_score(logreg.y_test, loaded.predict(X))
    )
