"""The client's ONNX calls against a live server: the runtime override, and a quantisation refused with its reason."""

from __future__ import annotations

import pytest

from modelworks_client import ApiError
from registry import optimisation
from registry.models import ModelVersion
from tests.client.conftest import fit_pipeline

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_client_overrides_the_runtime_and_hears_why_a_model_cannot_be_quantized(mw, cancer_data, settings):
    settings.MODELWORKS_ONNX_TIMING_MS = 5
    mw.register(fit_pipeline(cancer_data), "cancer", eval_data=cancer_data.test, target="y")
    optimisation.model_version_convert_onnx(version=ModelVersion.objects.get())  # what the worker does

    assert mw.set_runtime("cancer", "models:/cancer/1", "onnx").raw["runtime"] == "onnx"
    onnx = mw.version("cancer", 1).raw["onnx"]
    assert onnx["status"] == "converted" and onnx["parity"]["labels_differing"] == 0
    assert mw.set_runtime("cancer", 1, "sklearn").raw["runtime_override"] == "sklearn"
    with pytest.raises(ApiError, match="nothing to quantise"):
        mw.quantize("cancer", 1)
