"""The demo seed grows a running experiment with history, and stays idempotent."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from experiments import selectors
from experiments.models import Experiment, Exposure

pytestmark = pytest.mark.django_db


def test_seed_demo_starts_an_experiment_with_readable_results(capsys):
    call_command("seed_demo")
    experiment = Experiment.objects.get(name="logreg-regularised")
    assert experiment.status == "running" and experiment.model.name == "breast-cancer-logreg"
    assert [arm.version.version for arm in experiment.arms.order_by("position")] == [1, 2]
    results = selectors.experiment_results(experiment)
    assert results["trustworthy"] is True
    assert sum(arm["exposed"] for arm in results["allocation"]["arms"]) == 4000
    assert len(results["primary"]["series"]["days"]) >= 14
    assert all(row["mean"] > 0.05 for row in results["primary"]["arms"])
    call_command("seed_demo")
    assert "experiment logreg-regularised: already seeded" in capsys.readouterr().out
    assert Exposure.objects.count() == 4000 and Experiment.objects.count() == 1
