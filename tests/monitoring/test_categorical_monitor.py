"""Categorical and boolean features through a real monitor run: the same categories whichever path read them
(reference CSV or the log's JSON via COPY), unseen categories named, pii features left out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from scipy import stats
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from monitoring.services.monitors import monitor_create, monitor_run
from registry import services as registry
from tests.monitoring.conftest import flush, predict_each

SIGNATURE = {
    "inputs": [
        {"name": "amount", "dtype": "float"},
        {"name": "colour", "dtype": "category"},
        {"name": "active", "dtype": "bool"},
        {"name": "email", "dtype": "category", "pii": True},
    ],
    "outputs": {"classes": [0, 1]},
}


def _frame(n: int, seed: int, colours=("red", "green", "blue")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(50, 10, n).round(2),
            "colour": rng.choice(colours, n),
            "active": rng.choice([True, False], n),
            "email": [f"user{i}@example.com" for i in range(n)],
        }
    )


@pytest.fixture
def shop_v1(db):
    train = _frame(300, 0)
    target = (train["colour"] == "red").astype(int)
    model = make_pipeline(
        ColumnTransformer(
            [
                ("categories", OneHotEncoder(handle_unknown="ignore"), ["colour", "active"]),
                ("amount", "passthrough", ["amount"]),
            ]
        ),
        LogisticRegression(max_iter=500),
    ).fit(train, target)
    registered = registry.registered_model_create(name="shop", task="classification")
    evaluation = _frame(200, 1)
    csv = evaluation.assign(target=(evaluation["colour"] == "red").astype(int)).to_csv(index=False).encode()
    version = registry.model_version_register(
        model=registered, artifact=sio.dumps(model), signature=SIGNATURE, evaluation_data=csv
    )
    registry.alias_create(model=registered, name="production", version=version)
    return version


@pytest.mark.django_db
def test_categories_compare_across_paths_and_unseen_ones_are_named(shop_v1):
    same = _frame(150, 2)
    predict_each("shop", [dict(r) for r in same.to_dict(orient="records")])
    flush()
    monitor = monitor_create(model=shop_v1.model, name="m", window_hours=1)
    calm = monitor_run(monitor=monitor)
    features = {f["name"]: f for f in calm.features}
    assert "email" not in features and "pii features not monitored: email" in calm.note
    assert features["colour"]["test"] == "chi2" and features["colour"]["unseen_count"] == 0
    assert features["active"]["test"] == "chi2" and features["active"]["unseen_count"] == 0
    assert not features["colour"]["drifted"] and not features["active"]["drifted"]
    reference = _frame(200, 1)
    table = [reference["colour"].value_counts().sort_index(), same["colour"].value_counts().sort_index()]
    assert features["colour"]["p_value"] == pytest.approx(stats.chi2_contingency(np.array(table)).pvalue, abs=1e-12)

    purple = _frame(150, 3, colours=("red", "purple"))
    predict_each("shop", [dict(r) for r in purple.to_dict(orient="records")])
    flush()
    drifted = {f["name"]: f for f in monitor_run(monitor=monitor).features}
    assert drifted["colour"]["drifted"] and drifted["colour"]["unseen"] == ["purple"]
    purple_share = (purple["colour"] == "purple").sum() / 300  # the window holds both batches
    assert drifted["colour"]["unseen_share"] == pytest.approx(purple_share)
