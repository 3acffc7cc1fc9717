"""Two people starting experiments on one model at the same moment: exactly one wins, the other is told why."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from rest_framework.test import APIClient

from config.api import exception_handler
from experiments import services
from experiments.models import Experiment, ExperimentStatus
from registry.locking import CONFLICT_MESSAGE, ConcurrentChangeError, lock_model, retry_on_conflict
from registry.models import RegisteredModel
from rollouts import services as rollouts

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_starts_on_one_model_let_exactly_one_run(production, challenger):
    drafts = [
        services.experiment_create(
            model=production.model,
            name=f"race-{i}",
            primary_metric={"kind": "quality"},
            arms=[{"name": "a", "version": 1, "weight": 1}, {"name": "b", "version": 2, "weight": 1}],
        )  # fmt: skip
        for i in range(4)
    ]
    barrier = threading.Barrier(len(drafts))
    outcomes: list[str] = []

    def start(experiment: Experiment) -> None:
        barrier.wait()
        try:
            services.experiment_start(experiment=experiment)
            outcomes.append("started")
        except ValidationError as exc:
            outcomes.append(" ".join(exc.messages))
        finally:
            connection.close()

    threads = [threading.Thread(target=start, args=(draft,)) for draft in drafts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("started") == 1, outcomes
    assert all("already has experiment 'race-" in outcome for outcome in outcomes if outcome != "started")
    assert Experiment.objects.filter(status=ExperimentStatus.RUNNING).count() == 1


# --- Lock order ------------------------------------------------------------------------------------------------------
# Deadlocks need two transactions to meet in the wrong order, which a plain race gives only now and then. A third
# connection holds the model row, both clients queue behind it in a known order, then it lets go: with one lock order
# (the model row first) they run one after the other; with two orders Postgres kills one of them as a deadlock.


def _waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def _wait_until_waiting(count: int) -> None:
    deadline = time.monotonic() + 10
    while _waiting_on_locks() < count:
        assert time.monotonic() < deadline, "the clients never queued behind the model lock"
        time.sleep(0.02)


def run_queued_behind_model_lock(model_id: int, *calls) -> list[str]:
    """Run each call in its own thread, started in order once the previous one waits on a lock, while the model row
    is held; then release it. The outcome of each call: "ok", a validation message, or the database error."""
    outcomes: dict[int, str] = {}
    holder_ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                RegisteredModel.objects.select_for_update().get(pk=model_id)
                holder_ready.set()
                release.wait(10)
        finally:
            connection.close()

    def run(index: int, call) -> None:
        try:
            call()
            outcomes[index] = "ok"
        except ValidationError as exc:
            outcomes[index] = " ".join(exc.messages)
        except DatabaseError as exc:
            outcomes[index] = f"database error: {exc}"
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holder_ready.wait(10)
    threads = []
    for index, call in enumerate(calls):
        thread = threading.Thread(target=run, args=(index, call))
        thread.start()
        threads.append(thread)
        _wait_until_waiting(index + 1)
    release.set()
    for thread in [holder, *threads]:
        thread.join(30)
    return [outcomes.get(index, "no answer") for index in range(len(calls))]


def test_start_and_conclude_of_one_experiment_at_once_never_deadlock(experiment):
    outcomes = run_queued_behind_model_lock(
        experiment.model_id,
        lambda: services.experiment_start(experiment=experiment),
        lambda: services.experiment_conclude(experiment=experiment, winner="control"),
    )
    assert outcomes == ["ok", "ok"]
    assert Experiment.objects.get(pk=experiment.pk).status == ExperimentStatus.CONCLUDED


def test_start_and_stop_or_new_weights_at_once_never_deadlock(experiment):
    outcomes = run_queued_behind_model_lock(
        experiment.model_id,
        lambda: services.experiment_start(experiment=experiment),
        lambda: services.experiment_set_weights(experiment=experiment, weights={"control": 90, "forest": 10}),
        lambda: services.experiment_stop(experiment=experiment),
    )
    assert outcomes == ["ok", "ok", "ok"]
    assert Experiment.objects.get(pk=experiment.pk).status == ExperimentStatus.STOPPED


def test_the_api_answers_concurrent_start_and_conclude_without_a_500(experiment, staff):
    def client() -> APIClient:
        api = APIClient()
        api.force_authenticate(staff)
        return api

    answers: list[int] = []

    def post(path: str, body: dict | None = None):
        def call() -> None:
            answers.append(client().post(path, body or {}, format="json").status_code)

        return call

    run_queued_behind_model_lock(
        experiment.model_id,
        post(f"/api/v1/experiments/{experiment.name}/start/"),
        post(f"/api/v1/experiments/{experiment.name}/conclude/", {"winner": "forest"}),
    )
    assert answers == [200, 200]


def test_a_rollback_and_a_promotion_of_one_rollout_at_once_never_deadlock(production, challenger):
    rollout = rollouts.rollout_start(model=production.model, candidate=challenger)
    outcomes = run_queued_behind_model_lock(
        production.model_id,
        lambda: rollouts.model_rollback(model=production.model),
        lambda: rollouts.rollout_promote(rollout=rollout),
    )
    assert outcomes == ["ok", "cannot promote a rollout that is aborted"]


def test_a_transaction_chosen_as_deadlock_victim_runs_once_more(production, regressor_model):
    """Two writers that do lock in opposite orders: Postgres kills one, and its one retry then succeeds."""
    first, second = production.model_id, regressor_model.pk

    @retry_on_conflict
    @transaction.atomic
    def lock_in_order(*ids: int) -> None:
        for model_id in ids:
            lock_model(model_id)

    outcomes = run_queued_behind_model_lock(
        first, lambda: lock_in_order(first, second), lambda: lock_in_order(second, first)
    )
    assert outcomes == ["ok", "ok"]


def test_a_deadlock_the_retry_cannot_absorb_answers_409_not_500(production, regressor_model):
    """Inside a caller's transaction (the API's create-and-start, say) a service cannot run again: the deadlock
    reaches the API, which answers 409 with Retry-After, nothing stored."""
    first, second = production.model_id, regressor_model.pk
    raised: list[BaseException] = []

    @transaction.atomic
    def lock_in_order(*ids: int) -> None:
        try:
            for model_id in ids:
                lock_model(model_id)
        except DatabaseError as exc:
            raised.append(exc)
            raise

    run_queued_behind_model_lock(first, lambda: lock_in_order(first, second), lambda: lock_in_order(second, first))
    assert len(raised) == 1, raised
    response = exception_handler(raised[0], {})
    assert response.status_code == 409 and response["Retry-After"] == "1"
    assert "try again" in response.data["detail"]
    response = exception_handler(ConcurrentChangeError(CONFLICT_MESSAGE), {})
    assert response.status_code == 409


def test_a_lock_timeout_behind_another_change_answers_409_not_500(production):
    raised: list[BaseException] = []

    @transaction.atomic
    def impatient() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '50ms'")
        try:
            lock_model(production.model_id)
        except DatabaseError as exc:
            raised.append(exc)
            raise

    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                lock_model(production.model_id)
                holding.set()
                done.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    try:
        with pytest.raises(DatabaseError, match="lock timeout"):
            impatient()
    finally:
        done.set()
        holder.join(10)
    response = exception_handler(raised[0], {})
    assert response.status_code == 409 and response["Retry-After"] == "1"
