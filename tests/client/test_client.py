"""The Python client against a live server on the real database: what a data scientist does from a notebook."""

from __future__ import annotations

import hashlib

import httpx
import numpy as np
import pytest

from modelworks_client import ApiError, ArtifactTampered, Client, GateRejected, NotFound, PermissionDenied
from registry.models import ModelVersion
from serving.keys import api_key_create
from tests.client.conftest import fit_pipeline

pytestmark = pytest.mark.django_db(transaction=True)


def test_register_a_fresh_pipeline_then_predict_with_it(mw, cancer_data):
    pipeline = fit_pipeline(cancer_data)
    version = mw.register(
        pipeline, "cancer", eval_data=cancer_data.test, target="y", gates=["accuracy >= 0.9"],
        tags={"team": "ds"}, alias="production",
    )  # fmt: skip

    assert (version.model, version.version, version.status) == ("cancer", 1, "production")
    assert version.gate_report["metrics_source"] == "computed" and version.gate_metrics["accuracy"] >= 0.9
    assert version.aliases == ["production"] and version.tags == {"team": "ds"}
    assert mw.model("cancer")["task"] == "classification"  # inferred from the fitted pipeline
    assert [f["name"] for f in version.signature["inputs"]] == list(cancer_data.X_test.columns)
    assert version.signature["outputs"] == {"classes": [0, 1]}

    rows = cancer_data.X_test.head(7)
    answer = mw.predict("cancer", rows, key="patient-1")
    assert answer.index.equals(rows.index)
    assert answer["prediction"].tolist() == pipeline.predict(rows).tolist()
    assert np.allclose(answer[["proba_0", "proba_1"]].to_numpy(), pipeline.predict_proba(rows), rtol=0, atol=1e-12)
    assert answer.attrs["version"] == 1 and answer.attrs["model"] == "cancer"

    second = mw.register(fit_pipeline(cancer_data, C=0.01), "cancer", eval_data=cancer_data.test, target="y")
    assert second.version == 2 and second.status == "validated"
    assert [v.version for v in mw.versions("cancer")] == [2, 1]
    table = mw.compare("cancer", [1, "models:/cancer/2"])
    assert list(table.columns) == ["v1", "v2"] and {"accuracy", "f1", "roc_auc"} <= set(table.index)
    assert table.loc["accuracy", "v1"] == version.gate_metrics["accuracy"]
    assert mw.set_alias("cancer", "staging", "models:/cancer/2")["version"] == 2
    assert mw.predict("cancer", rows.to_dict(orient="records"), alias="staging").attrs["version"] == 2


def test_a_rejected_version_raises_gate_rejected_with_its_failed_rules(mw, cancer_data):
    with pytest.raises(GateRejected) as caught:
        mw.register(fit_pipeline(cancer_data), "cancer", eval_data=cancer_data.test, target="y",
                    gates=["accuracy >= 0.999", "roc_auc >= 0.5"], alias="production")  # fmt: skip

    rejected = caught.value
    assert rejected.version.version == 1 and rejected.version.status == "rejected"
    assert [r["rule"] for r in rejected.failed] == ["accuracy >= 0.999"]
    assert "cancer v1 was rejected by its quality gates: accuracy >= 0.999 (accuracy = 0." in str(rejected)
    assert "required >= 0.999" in str(rejected)
    assert mw.model("cancer")["aliases"] == {}  # the alias was not given to a rejected version


class Altering(httpx.HTTPTransport):
    """A proxy on the way that flips one bit of every artifact it carries (and nothing else)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if not request.url.path.endswith("/artifact/"):
            return response
        body = bytearray(response.read())
        body[-1] ^= 1
        return httpx.Response(response.status_code, headers=response.headers, content=bytes(body))


def test_load_model_round_trips_bit_identical_predictions_with_an_api_key(live_server, mw, cancer_data):
    pipeline = fit_pipeline(cancer_data)
    mw.register(pipeline, "cancer", eval_data=cancer_data.test, target="y", alias="production")
    raw = api_key_create(name="notebook", scopes=["predict:cancer", "registry:read"])[1]

    with Client(live_server.url, token=raw) as keyed:  # an API key works wherever a token does, within its scopes
        loaded = keyed.load_model("models:/cancer@production")
        X = cancer_data.X_test
        assert np.array_equal(loaded.predict_proba(X), pipeline.predict_proba(X))
        assert np.array_equal(loaded.predict(X), pipeline.predict(X))
        served = keyed.predict("cancer", X.head(20))
        assert np.array_equal(served[["proba_0", "proba_1"]].to_numpy(), loaded.predict_proba(X.head(20)))
        data, version = keyed.download("models:/cancer/1")
        assert version.sha256 == hashlib.sha256(data).hexdigest()
        with pytest.raises(PermissionDenied, match="403 on POST /api/v1/models/cancer/aliases/: this API key lacks"):
            keyed.set_alias("cancer", "staging", 1)


def test_a_tampered_artifact_is_refused_by_the_client(live_server, token, mw, cancer_data, forest, artifact_root):
    mw.register(fit_pipeline(cancer_data), "cancer", eval_data=cancer_data.test, target="y", alias="production")
    # The client hashes what it received itself: bytes changed on the way cannot slip a model in.
    with Client(live_server.url, token=token) as proxied:
        proxied._http._transport = Altering()
        with pytest.raises(ArtifactTampered, match="the X-Artifact-SHA256 header says"):
            proxied.load_model("models:/cancer/1")

    stored = ModelVersion.objects.get(model__name="cancer", version=1)
    (artifact_root / stored.artifact_path).write_bytes(forest.artifact)  # a valid model, but not the registered one
    with pytest.raises(ArtifactTampered) as caught:
        mw.load_model("models:/cancer@production")
    assert caught.value.status == 409 and "tampered" in str(caught.value)
    stored.refresh_from_db()
    assert stored.integrity_failed_at is not None  # the server marked it, as a load would
    assert mw.version("cancer", 1).integrity_ok is False
    with pytest.raises(ArtifactTampered, match="failed the server's integrity check"):
        mw.load_model("models:/cancer/1")


def test_errors_carry_the_servers_field_level_detail(mw, cancer_data):
    with pytest.raises(ApiError) as caught:
        mw.register(b"", "cancer", task="classification")
    assert caught.value.status == 400 and caught.value.fields == {"artifact": ["the file is empty"]}
    assert str(caught.value) == "400 on POST /api/v1/models/cancer/versions/: artifact: the file is empty"

    with pytest.raises(ApiError) as caught:
        mw.register(fit_pipeline(cancer_data), "other", eval_data=cancer_data.test, target="y", gates=["accuracy"])
    assert str(caught.value).startswith("400 on POST /api/v1/models/: gate_rules: rule 0: cannot read the rule")

    mw.register(fit_pipeline(cancer_data), "cancer", eval_data=cancer_data.test, target="y", alias="production")
    row = cancer_data.X_test.head(1).to_dict(orient="records")[0]
    del row["mean radius"]
    with pytest.raises(ApiError, match=r"400 on POST /api/v1/models/cancer/predict: the input does not match the "
                                       r"model's signature; row 0 'mean radius': is missing"):  # fmt: skip
        mw.predict("cancer", [row])
    with pytest.raises(NotFound, match="404 on GET /api/v1/models/nobody/versions/1/"):
        mw.version("nobody", 1)
    with pytest.raises(ApiError, match="400 on POST /api/v1/models/cancer/aliases/: version: cancer has no version 9"):
        mw.set_alias("cancer", "staging", 9)
