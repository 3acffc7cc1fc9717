"""Two people starting experiments on one model at the same moment: exactly one wins, the other is told why."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from experiments import services
from experiments.models import Experiment, ExperimentStatus

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
