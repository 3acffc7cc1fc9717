"""A shadow version checks a mirrored request as the version would if it were routed: a value its arithmetic cannot
hold (a float32 forest and 1e39, which the float64 production model takes) is the caller's input refused, logged as
such with the reason, and never counted as the candidate's error in the rollout's shadow comparison."""

from __future__ import annotations

import pytest

from registry import services as registry
from rollouts import services as rollouts
from rollouts.selectors import shadow_comparison
from serving.models import PredictionLog
from serving.prediction_log import prediction_log
from serving.shadow import shadow_runner
from tests.serving.conftest import post, rows_of

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/models/cancer/predict"


def test_a_float32_shadow_refuses_what_it_cannot_hold_as_input_not_as_its_failure(production, forest, caller, logreg):
    candidate = registry.model_version_register(
        model=production.model, artifact=forest.artifact, evaluation_data=forest.eval_csv
    )
    rollout = rollouts.rollout_start(model=production.model, candidate=candidate, mode="shadow", shadow_percent=100)
    good, huge = rows_of(logreg.X_test, 2)
    huge["mean radius"] = 1e39  # a float64 value past float32's 3.4e38
    for row in (good, huge):
        answered = post(caller, URL, {"instances": [row]})
        assert answered.status_code == 200, answered.content  # production (float64) serves it
    shadow_runner().drain()
    prediction_log().flush()

    shadows = PredictionLog.objects.filter(route_reason=f"rollout:{rollout.pk}:shadow").order_by("pk")
    assert [s.outcome for s in shadows] == ["shadow", "shadow-inv"]
    refused = shadows[1].outputs["error"]
    assert "mean radius" in refused and "outside what this model can take" in refused, refused
    assert shadow_comparison(rollout)["shadow_errors"] == 0
