"""ONNX conversion at registration: parity or never served, the faster runtime chosen (and overridable), the
conversion's artifact integrity-checked, a quantised candidate through the gates, onnxruntime's providers shown."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import skops.io as sio
from django.core.management import CommandError, call_command
from django.test import Client
from prometheus_client import REGISTRY
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from registry import gates, optimisation, services
from registry.models import ModelVersion, RegistryEvent
from serving.model_cache import model_cache
from tests.conftest import Trained, stored_files
from tests.serving import conftest as serving
from tests.serving.conftest import make_key, post, rows_of

pytestmark = pytest.mark.django_db
fresh_serving_state = serving.fresh_serving_state


@pytest.fixture(autouse=True)
def short_timings(settings):
    """Latencies are measured for 5 ms per runtime and batch size (250 by default): enough to order them here."""
    settings.MODELWORKS_ONNX_TIMING_MS = 5


@pytest.fixture(scope="module")
def mlp() -> Trained:
    """A small neural network: the kind of model whose ONNX graph has MatMul weights to quantise."""
    X, y = datasets.load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    model = make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=400, random_state=0)).fit(X_train, y_train)
    del model[-1]._optimizer  # only partial_fit needs it, and skops does not trust its type
    return Trained(model, sio.dumps(model), X_test, y_test)


def register(model, trained: Trained) -> ModelVersion:
    return services.model_version_register(model=model, artifact=trained.artifact, evaluation_data=trained.eval_csv)


def served(version: ModelVersion, trained: Trained, rows: int = 20) -> dict:
    """The predict endpoint's answer for the first rows of the test split, pinned to the version."""
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {make_key(f'predict:{version.model.name}')}")
    answer = post(client, f"/api/v1/models/{version.model.name}/predict?version={version.version}",
                  {"instances": rows_of(trained.X_test, rows)})  # fmt: skip
    assert answer.status_code == 200, answer.content
    return answer.json()


def test_a_conversion_that_passes_parity_serves_with_the_runtime_chosen_and_the_override(
    api, classifier_model, logreg, artifact_root, settings
):
    settings.MODELWORKS_ROUTE_TTL_MS = 0  # a change of runtime is followed at the next request, not within 500 ms
    version = optimisation.model_version_convert_onnx(version=register(classifier_model, logreg))
    report = version.onnx_conversion
    assert report["status"] == "converted", report
    assert report["parity"]["labels_differing"] == 0 and report["parity"]["max_probability_diff"] <= 1e-5
    assert set(report["latency_ms"]) == {"sklearn", "onnx"} and set(report["latency_ms"]["onnx"]) == {"1", "64"}
    # the faster by the recorded figures serves it
    onnx_ms, sklearn_ms = report["latency_ms"]["onnx"], report["latency_ms"]["sklearn"]
    ratio = np.sqrt(np.prod([onnx_ms[n] / sklearn_ms[n] for n in ("1", "64")]))
    assert version.runtime == report["chosen"] == ("onnx" if ratio < 1 else "sklearn")
    # stored beside the original, with its own sha256
    stored = (artifact_root / version.onnx_artifact_path).read_bytes()
    assert version.onnx_sha256 == hashlib.sha256(stored).hexdigest() and version.onnx_size_bytes == len(stored)
    assert version.onnx_artifact_path.rsplit("/", 1)[0] == version.artifact_path.rsplit("/", 1)[0]

    expected = logreg.estimator.predict_proba(logreg.X_test.head(20))
    for runtime in ("onnx", "sklearn"):
        answer = api.put(f"/api/v1/models/cancer/versions/{version.version}/runtime/", {"runtime": runtime},
                         format="json")  # fmt: skip
        assert answer.status_code == 200, answer.content
        assert answer.json()["runtime"] == answer.json()["runtime_override"] == runtime
        body = served(version, logreg)
        assert model_cache().get(ModelVersion.objects.get(pk=version.pk)).runtime == runtime  # reloaded on the change
        assert body["cached"] == [False] * 20
        assert body["predictions"] == logreg.estimator.predict(logreg.X_test.head(20)).tolist()
        assert np.abs(np.array(body["probabilities"]) - expected).max() <= (1e-5 if runtime == "onnx" else 1e-12)
    back = api.put(f"/api/v1/models/cancer/versions/{version.version}/runtime/", {"runtime": ""}, format="json")
    assert back.json()["runtime"] == report["chosen"] and back.json()["runtime_override"] == ""
    assert back.json()["onnx"]["sha256"] == version.onnx_sha256
    assert RegistryEvent.objects.filter(version=version, action="version.runtime_changed").count() == 3

    # onnxruntime's providers: the CPU here, in /readyz and the metrics (an ONNX session is loaded in this process)
    services.model_version_load(version, "onnx")
    onnx_check = Client().get("/readyz").json()["checks"]["onnx"]
    assert onnx_check["providers"] == ["CPUExecutionProvider"] and "CPUExecutionProvider" in onnx_check["available"]
    assert REGISTRY.get_sample_value("modelworks_onnx_provider", {"provider": "CPUExecutionProvider"}) == 1


def test_a_conversion_that_disagrees_is_refused_and_never_served(
    api, classifier_model, logreg, settings, artifact_root
):
    settings.MODELWORKS_ONNX_PARITY_PROBA_ATOL = 1e-12  # float32 arithmetic cannot meet this
    version = optimisation.model_version_convert_onnx(version=register(classifier_model, logreg))
    report = version.onnx_conversion
    assert report["status"] == "parity_failed" and "probabilities differ by up to" in report["error"], report
    assert version.runtime == "sklearn" and not version.onnx_sha256
    assert not [path for path in stored_files(artifact_root) if path.endswith(".onnx")]
    refused = RegistryEvent.objects.get(version=version, action="version.onnx_refused")
    assert "atol 1e-12" in refused.message

    answer = api.put("/api/v1/models/cancer/versions/1/runtime/", {"runtime": "onnx"}, format="json")
    assert answer.status_code == 400 and "parity_failed" in answer.json()["runtime"][0], answer.content
    with pytest.raises(CommandError, match="parity_failed: probabilities differ") as refused_here:
        call_command("convert_onnx", "cancer", "1")
    assert refused_here.value.returncode == 3
    body = served(version, logreg)
    assert body["probabilities"] == logreg.estimator.predict_proba(logreg.X_test.head(20)).tolist()  # scikit-learn's


def test_a_conversion_changed_on_disk_is_never_loaded(classifier_model, logreg, artifact_root):
    version = optimisation.model_version_convert_onnx(version=register(classifier_model, logreg))
    version = optimisation.model_version_set_runtime(version=version, runtime="onnx")
    (artifact_root / version.onnx_artifact_path).write_bytes(b"\x08\x07" + b"0" * 100)
    with pytest.raises(services.ArtifactIntegrityError, match="ONNX conversion sha256"):
        services.model_version_load(version, "onnx")
    version.refresh_from_db()
    assert not version.servable


def test_the_quantised_candidate_goes_through_the_gates_beside_its_parent(api, classifier_model, mlp, logreg):
    parent = optimisation.model_version_convert_onnx(version=register(classifier_model, mlp))
    assert parent.onnx_conversion["status"] == "converted", parent.onnx_conversion
    answer = api.post(f"/api/v1/models/cancer/versions/{parent.version}/quantize/")
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["format"] == "onnx" and body["runtime"] == "onnx" and body["lineage"]["parent"]["version"] == 1
    report = body["gate_report"]
    assert [rule["rule"] for rule in report["rules"]] == [*classifier_model.gate_rules, "accuracy >= parent - 0.005"]
    delta = report["rules"][-1]
    assert delta["threshold"] == pytest.approx(parent.gate_report["metrics"]["accuracy"] - 0.005)
    assert body["status"] == ("validated" if all(rule["passed"] for rule in report["rules"]) else "rejected")
    comparison = report["comparison"]
    assert comparison["size_bytes"]["candidate"] < comparison["size_bytes"]["parent"] == parent.onnx_size_bytes
    assert set(comparison["latency_ms"]["candidate"]) == {"1", "64"}
    assert report["parent_metrics"] == parent.gate_report["metrics"]

    # a rule the candidate cannot meet: rejected, so it never gets traffic
    services.registered_model_update(model=classifier_model, gate_rules=["accuracy >= parent + 0.5"])
    rejected = optimisation.model_version_quantize(version=parent)
    assert rejected.status == "rejected" and "required >=" in rejected.gate_report["rules"][0]["reason"]
    services.registered_model_update(model=classifier_model, gate_rules=["accuracy >= 0.5"])
    rerun = services.model_version_rerun_gates(version=rejected)  # still judged against its parent too
    assert [rule["rule"] for rule in rerun.gate_report["rules"]] == ["accuracy >= 0.5", "accuracy >= parent - 0.005"]

    # a logistic regression converts to ai.onnx.ml operators: nothing to quantise, said so, nothing stored
    plain = optimisation.model_version_convert_onnx(version=register(classifier_model, logreg))
    refused = api.post(f"/api/v1/models/cancer/versions/{plain.version}/quantize/")
    assert refused.status_code == 400 and "nothing to quantise" in refused.json()["version"][0]
    assert ModelVersion.objects.filter(model=classifier_model).count() == 4


def test_a_version_without_evaluation_data_cannot_be_checked_for_parity(classifier_model, logreg):
    version = services.model_version_register(model=classifier_model, artifact=logreg.artifact, convert_onnx=True)
    assert version.onnx_conversion["status"] == "failed" and "evaluation" in version.onnx_conversion["error"]
    assert version.runtime == "sklearn"


def test_a_parent_rule_compares_with_the_parent_and_does_not_apply_without_one():
    assert gates.parse_rule("accuracy >= parent - 0.005").baseline == "parent"
    rule = ["accuracy >= parent - 0.005"]
    assert gates.evaluate(rule, {"accuracy": 0.95}, None, {"accuracy": 0.954})["outcome"] == "validated"
    assert gates.evaluate(rule, {"accuracy": 0.95}, None, {"accuracy": 0.96})["outcome"] == "rejected"
    alone = gates.evaluate(rule, {"accuracy": 0.5}, {"accuracy": 0.99})
    assert alone["outcome"] == "validated" and "not derived from a version" in alone["rules"][0]["reason"]
