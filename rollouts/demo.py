"""The demo's rollout: a retrained diabetes model rolled out against production, the way a user would start one."""

from __future__ import annotations

from typing import TextIO

import skops.io as sio
from sklearn import datasets
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split

from registry import services as registry
from registry.models import RegisteredModel
from rollouts import services as rollouts

MODEL = "diabetes-ridge"


def seed_rollout(out: TextIO) -> None:
    """Register a second, more regularised ridge model and start a canary rollout of it (idempotent).

    Stages are a minute long so the admin shows it moving; it needs traffic to move on (50 candidate requests per
    stage): without any, the stages are extended and the rollout pauses as inconclusive, as it would in production.
    """
    model = RegisteredModel.objects.filter(name=MODEL).first()
    if model is None or not model.aliases.filter(name=registry.PRODUCTION_ALIAS).exists():
        out.write(f"rollout demo: {MODEL} is not in production; skipped\n")
        return
    if model.rollouts.exists():
        out.write(f"rollout demo: {MODEL} already has a rollout\n")
        return
    X, y = datasets.load_diabetes(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=42)
    candidate = registry.model_version_register(
        model=model,
        artifact=sio.dumps(Ridge(alpha=1.0).fit(X_train, y_train)),
        filename=f"{MODEL}-alpha1.skops",
        params={"alpha": "1.0"},
        lineage={"source": "seed_demo", "note": "more regularised retrain, rolled out by the demo"},
        evaluation_data=X_test.assign(target=y_test).to_csv(index=False).encode(),
    )
    if candidate.status != "validated":
        out.write(f"rollout demo: {candidate} is {candidate.status}; no rollout\n")
        return
    rollout = rollouts.rollout_start(model=model, candidate=candidate, stage_seconds=60, analysis={"min_requests": 50})
    out.write(f"{rollout}: 10% -> 25% -> 50% -> 100%, a minute per stage, analysed by the beat tick\n")
