"""The client's distill: a student of a registered version, over real HTTP, registered with lineage to its teacher."""

from __future__ import annotations

import pytest

from modelworks_client import ApiError
from tests.client.conftest import fit_pipeline


def test_distill_through_the_client(mw, cancer_data):
    mw.register(fit_pipeline(cancer_data), "cancer", eval_data=cancer_data.test, target="y", gates=["accuracy >= 0.9"])
    student = mw.distill("cancer", 1, "forest:3", augment_rows=50)  # the target "y" found in the teacher's sample

    assert (student.version, student.status) == (2, "validated")
    assert student.raw["lineage"]["distilled_from"]["version"] == 1
    side = student.gate_report["comparison"]
    assert side["training_rows"]["augmented"] == 50 and side["size_bytes"]["student"] == student.size_bytes
    with pytest.raises(ApiError) as refused:
        mw.distill("cancer", 1, "svm")
    assert refused.value.status == 400 and "student" in refused.value.fields
