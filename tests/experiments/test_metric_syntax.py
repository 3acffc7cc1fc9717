"""One metric syntax everywhere: "conversion:purchase" (as the command and the admin take it) and
{"kind": "conversion", "event": "purchase"} store the same experiment, through the API, the command and the admin."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from experiments.models import Experiment

pytestmark = pytest.mark.django_db
ARMS = [{"name": "control", "version": 1, "weight": 50}, {"name": "forest", "version": 2, "weight": 50}]


def stored(name: str) -> tuple:
    experiment = Experiment.objects.get(name=name)
    return experiment.primary_metric, experiment.guardrail_metrics


def test_both_spellings_store_the_same_experiment(api, challenger, staff, client):
    as_text = {"name": "text", "model": "cancer", "arms": ARMS, "primary_metric": "conversion:purchase",
               "guardrail_metrics": ["quality", "mean_value:order"]}  # fmt: skip
    as_objects = {**as_text, "name": "objects", "primary_metric": {"kind": "conversion", "event": "purchase"},
                  "guardrail_metrics": [{"kind": "quality"}, {"kind": "mean_value", "event": "order"}]}  # fmt: skip
    mixed = {**as_text, "name": "mixed", "guardrail_metrics": [{"kind": "quality"}, "mean_value:order"]}
    for body in (as_text, as_objects, mixed):
        answer = api.post("/api/v1/experiments/", body, format="json")
        assert answer.status_code == 201, answer.content
        assert answer.json()["primary_metric"] == {"kind": "conversion", "event": "purchase"}
    arms = ["--arm", "control=1:50", "--arm", "forest=2:50"]
    guardrails = ["--guardrail", "quality", "--guardrail", "mean_value:order"]
    call_command(
        "experiment", "create", "cli", "--model", "cancer", *arms, "--metric", "conversion:purchase", *guardrails
    )
    expected = (
        {"kind": "conversion", "event": "purchase"},
        [{"kind": "quality"}, {"kind": "mean_value", "event": "order"}],
    )
    assert stored("text") == stored("objects") == stored("mixed") == stored("cli") == expected


BAD_METRICS = [
    ("clicks:x", "kind must be one of"),
    ("conversion", "a conversion metric names its business event"),
    ("quality:f1", "a quality metric has no event"),
    (7, 'must be text such as "conversion:purchase" or an object'),
]


def test_a_bad_metric_in_either_spelling_is_a_400_on_its_field(api, challenger):
    for metric, message in BAD_METRICS:  # one setup for all (registering the versions is the slow part)
        body = {"name": "bad", "model": "cancer", "arms": ARMS, "primary_metric": metric}
        answer = api.post("/api/v1/experiments/", body, format="json")
        assert answer.status_code == 400 and message in answer.json()["primary_metric"][0], answer.content
        guard = {**body, "primary_metric": "quality", "guardrail_metrics": [metric]}
        answer = api.post("/api/v1/experiments/", guard, format="json")
        assert answer.status_code == 400 and message in answer.json()["guardrail_metrics"][0], answer.content
    assert not Experiment.objects.exists()
