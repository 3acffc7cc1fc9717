"""Fixtures for the platform tests."""

from __future__ import annotations

import pytest

from registry import services as registry
from serving.keys import api_key_create


@pytest.fixture
def production_and_key(classifier_model, logreg):
    """`cancer` v1 in production, a key that may call it, and one valid row."""
    version = registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=version)
    row = {k: float(v) for k, v in logreg.X_test.head(1).to_dict(orient="records")[0].items()}
    return api_key_create(name="nginx-test", scopes=["predict:cancer"])[1], row
