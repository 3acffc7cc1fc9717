"""Conversion opted in at registration, done by a real Celery worker; the client's runtime override, and a
quantisation refused with its reason, over real HTTP."""

from __future__ import annotations

import time

import pytest

from modelworks_client import ApiError
from tests.client.conftest import fit_pipeline
from tests.features.conftest import _worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def celery_worker(tmp_path, artifact_root, monkeypatch):
    """A worker on the default queue (where registration queues conversions), on this test's artifact storage."""
    monkeypatch.setenv("ARTIFACT_ROOT", str(artifact_root))
    monkeypatch.setenv("MODELWORKS_ONNX_TIMING_MS", "5")
    yield from _worker(tmp_path, ["--without-mingle", "--without-gossip"], tmp_path / "worker.log")


def test_a_worker_converts_what_registration_opted_in_and_the_client_overrides_the_runtime(
    mw, cancer_data, celery_worker
):
    version = mw.register(
        fit_pipeline(cancer_data), "cancer", eval_data=cancer_data.test, target="y", convert_onnx=True
    )
    assert version.raw["onnx"]["status"] == "pending" and version.raw["runtime"] == "sklearn"
    deadline = time.monotonic() + 60
    while (onnx := mw.version("cancer", 1).raw["onnx"])["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert onnx["status"] == "converted", (onnx, celery_worker.read_text()[-2000:])
    assert onnx["parity"]["labels_differing"] == 0 and mw.version("cancer", 1).raw["runtime"] == onnx["chosen"]

    other = "sklearn" if onnx["chosen"] == "onnx" else "onnx"
    overridden = mw.set_runtime("cancer", "models:/cancer/1", other).raw
    assert overridden["runtime"] == overridden["runtime_override"] == other
    assert mw.set_runtime("cancer", 1, "").raw["runtime"] == onnx["chosen"]
    with pytest.raises(ApiError, match="nothing to quantise"):
        mw.quantize("cancer", 1)
