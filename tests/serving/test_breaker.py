"""The circuit breaker: its state machine, and serving through it with a model that fails on demand."""

from __future__ import annotations

import pytest

from registry import services as registry
from serving.breaker import CLOSED, HALF_OPEN, OPEN, BreakerPolicy, CircuitBreaker
from serving.models import ServingPolicy
from tests.serving.conftest import post, rows_of

URL = "/api/v1/models/cancer/predict"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_then_probes_and_closes():
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=3, cooldown_seconds=10), clock=clock)
    for _ in range(2):
        breaker.record(False)
    assert breaker.state == CLOSED
    breaker.record(True)  # a success resets the run
    for _ in range(3):
        breaker.record(False)
    assert breaker.state == OPEN and not breaker.allow()
    assert breaker.retry_after() == 10
    clock.now = 10
    assert breaker.state == HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # exactly one probe
    breaker.record(True)
    assert breaker.state == CLOSED and breaker.allow()


def test_a_failed_probe_opens_it_again():
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(consecutive_failures=1, cooldown_seconds=5), clock=clock)
    breaker.record(False)
    clock.now = 5
    assert breaker.allow()
    breaker.record(False)
    assert breaker.state == OPEN
    clock.now = 9
    assert not breaker.allow()


def test_opens_on_the_error_rate_over_the_window():
    clock = Clock()
    policy = BreakerPolicy(consecutive_failures=100, error_rate=0.5, window_seconds=10, min_requests=10)
    breaker = CircuitBreaker(policy, clock=clock)
    for i in range(9):
        breaker.record(i % 2 == 0)  # 4 failures of 9: under the minimum count
    assert breaker.state == CLOSED
    breaker.record(False)  # 5 of 10
    assert breaker.state == OPEN


def test_old_outcomes_leave_the_window():
    clock = Clock()
    policy = BreakerPolicy(consecutive_failures=100, error_rate=0.5, window_seconds=10, min_requests=4)
    breaker = CircuitBreaker(policy, clock=clock)
    for _ in range(3):
        breaker.record(False)
    clock.now = 20
    for _ in range(3):
        breaker.record(True)
    breaker.record(False)
    assert breaker.state == CLOSED  # 1 failure of 4 within the window


@pytest.fixture
def fragile(classifier_model, logreg, forest):
    """v1 (forest) was production; v2 (logistic regression, which cannot take NaN) declares every feature nullable,
    so a null in any feature reaches the model and makes it fail: a model that fails on demand."""
    v1 = registry.model_version_register(
        model=classifier_model, artifact=forest.artifact, evaluation_data=forest.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=v1)
    signature = {"inputs": [{"name": c, "dtype": "float", "nullable": True} for c in logreg.X_test.columns]}
    v2 = registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, signature=signature, evaluation_data=logreg.eval_csv
    )
    registry.alias_move(model=classifier_model, name="production", version=v2)
    ServingPolicy.objects.create(model=classifier_model, breaker_consecutive_failures=3, breaker_cooldown_seconds=1)
    return v1, v2


@pytest.mark.django_db
def test_an_open_breaker_serves_the_previous_production_version_then_recovers(caller, fragile, logreg, forest):
    good = {"instances": rows_of(logreg.X_test, 1)}
    bad_row = rows_of(logreg.X_test, 1)[0] | {"mean radius": None}
    assert post(caller, URL, good).json()["version"] == 2
    for _ in range(3):
        failed = post(caller, URL, {"instances": [bad_row]})
        assert failed.status_code == 503  # the fallback (v1) refuses a null too: nobody can answer
        assert int(failed["Retry-After"]) >= 1
    other = {"instances": rows_of(logreg.X_test.iloc[5:], 1)}  # not in the prediction cache
    served = post(caller, URL, other).json()
    assert served["version"] == 1 and served["route"] == "fallback:circuit breaker open"
    assert served["predictions"] == forest.estimator.predict(logreg.X_test.iloc[5:6]).tolist()

    import time

    time.sleep(1.1)  # the cooldown: the next request is the probe, and v2 answers it
    recovered = post(caller, URL, {"instances": rows_of(logreg.X_test.iloc[6:], 1)}).json()
    assert recovered["version"] == 2 and recovered["route"] == "alias:production"


@pytest.mark.django_db
def test_without_a_fallback_an_open_breaker_answers_503_with_retry_after(caller, classifier_model, logreg):
    signature = {"inputs": [{"name": c, "dtype": "float", "nullable": True} for c in logreg.X_test.columns]}
    only = registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, signature=signature, evaluation_data=logreg.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=only)
    ServingPolicy.objects.create(model=classifier_model, breaker_consecutive_failures=2, breaker_cooldown_seconds=30)
    bad_row = rows_of(logreg.X_test, 1)[0] | {"mean texture": None}
    for _ in range(2):
        post(caller, URL, {"instances": [bad_row]})
    refused = post(caller, URL, {"instances": rows_of(logreg.X_test, 1)})
    assert refused.status_code == 503
    assert 25 <= int(refused["Retry-After"]) <= 30
    assert "circuit breaker open" in refused.json()["detail"]


@pytest.mark.django_db
def test_going_over_the_inference_budget_counts_as_a_failure(caller, production, classifier_model, logreg):
    ServingPolicy.objects.create(
        model=classifier_model, inference_budget_ms=0, breaker_consecutive_failures=2, breaker_cooldown_seconds=30
    )
    responses = [post(caller, URL, {"instances": rows_of(logreg.X_test.iloc[i:], 1)}) for i in range(3)]
    assert [r.status_code for r in responses] == [503, 503, 503]
    assert "budget" in responses[0].json()["detail"]
    assert "circuit breaker open" in responses[2].json()["detail"]
