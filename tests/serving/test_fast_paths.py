"""The fast forest path gives exactly scikit-learn's floats."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serving.fast_paths import predict_proba

X, y = load_iris(return_X_y=True)
MODELS = [
    RandomForestClassifier(n_estimators=25, random_state=0).fit(X, y),
    ExtraTreesClassifier(n_estimators=25, random_state=0).fit(X, y),
    make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=25, random_state=1)).fit(X, y),
]


@pytest.mark.parametrize("model", MODELS, ids=["forest", "extra-trees", "pipeline"])
@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 64), seed=st.integers(0, 2**32 - 1))
def test_forest_probabilities_are_bit_identical(model, rows, seed):
    sample = np.random.default_rng(seed).normal(X.mean(axis=0), X.std(axis=0) * 2, size=(rows, 4))
    assert np.array_equal(predict_proba(model, sample), model.predict_proba(sample))


def test_other_models_use_their_own_predict_proba(logreg):
    assert np.array_equal(predict_proba(logreg.estimator, logreg.X_test), logreg.estimator.predict_proba(logreg.X_test))
