"""The demo experiment: a more regularised challenger against the demo logistic regression, with two weeks of
exposures and purchases so the results page has something to show. Idempotent: an existing demo experiment is kept.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import skops.io as sio
from django.utils import timezone
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from experiments import exposures, services
from experiments.models import Experiment
from monitoring.services.events import EventItem, business_events_record
from registry import services as registry
from registry.models import RegisteredModel
from serving import traffic

MODEL, NAME = "breast-cancer-logreg", "logreg-regularised"
KEYS, DAYS = 4000, 14
CONVERSION = {"control": 0.10, "regularised": 0.115}


def seed_experiments(stdout) -> None:
    if Experiment.objects.filter(name=NAME).exists():
        stdout.write(f"experiment {NAME}: already seeded")
        return
    model = RegisteredModel.objects.filter(name=MODEL).first()
    production = (
        model.aliases.filter(name=registry.PRODUCTION_ALIAS).select_related("version").first() if model else None
    )
    if production is None:
        stdout.write(f"experiment {NAME}: skipped ({MODEL} has no production version)")
        return
    challenger = _challenger(model)
    if not challenger.servable or challenger.status == "registered":
        stdout.write(f"experiment {NAME}: skipped (the challenger is {challenger.status})")
        return
    experiment = services.experiment_create(
        model=model, name=NAME, salt=f"{NAME}-demo", description="Stronger L2 regularisation (C=0.05) against C=1.",
        arms=[{"name": "control", "version": production.version.version, "weight": 50},
              {"name": "regularised", "version": challenger.version, "weight": 50}],
        primary_metric={"kind": "conversion", "event": "purchase"},
        guardrail_metrics=[{"kind": "mean_value", "event": "purchase"}, {"kind": "quality"}],
        minimum_sample_size=1000, minimum_detectable_effect=0.1,
    )  # fmt: skip
    services.experiment_start(experiment=experiment)
    experiment.refresh_from_db()
    _history(experiment)
    stdout.write(f"experiment {NAME}: running on {MODEL} v{production.version.version} vs v{challenger.version}")


def _challenger(model: RegisteredModel):
    existing = model.versions.filter(params__C="0.05").first()
    if existing is not None:
        return existing
    X, y = datasets.load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=42)
    estimator = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=1000)).fit(X_train, y_train)
    evaluation = X_test.assign(target=y_test).to_csv(index=False).encode()
    return registry.model_version_register(
        model=model, artifact=sio.dumps(estimator), filename=f"{MODEL}-c005.skops", params={"C": "0.05"},
        lineage={"source": "experiments/demo.py"}, evaluation_data=evaluation,
    )  # fmt: skip


def _history(experiment: Experiment) -> None:
    """Two weeks of first exposures (through the exposure writer) and purchases (through monitoring's service)."""
    rng = np.random.default_rng(0)
    split = traffic.active_split(experiment.model_id)
    start = timezone.now() - timedelta(days=DAYS)
    # The experiment "started" two weeks ago, so the sample ratio check covers the whole history.
    type(experiment).objects.filter(pk=experiment.pk).update(started_at=start, allocation_changed_at=start)
    batch, purchases = {}, []
    for i in range(KEYS):
        key = f"ab-user-{i}"  # apart from the monitoring demo's demo-user-N keys
        arm = split.arm_for(key).name
        seen = start + timedelta(seconds=float(rng.uniform(0, DAYS * 86400 - 7200)))
        batch[(experiment.pk, key)] = (arm, seen)
        if rng.random() < CONVERSION[arm]:
            value = round(float(rng.lognormal(3.5, 0.6)), 2)
            purchases.append(EventItem(key=key, name="purchase", value=value, time=seen + timedelta(hours=1)))
    exposures.insert(batch)
    business_events_record(items=purchases)
