"""The fast paths give exactly scikit-learn's floats: a forest's, and a pipeline's scalers applied per column."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serving.fast_paths import fill_scaled, leading_scalers, predict_proba

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


SCALED = [
    make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y),
    make_pipeline(StandardScaler(with_mean=False), StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y),
    make_pipeline(StandardScaler(with_std=False), RandomForestClassifier(n_estimators=10, random_state=0)).fit(X, y),
]


@pytest.mark.parametrize("model", SCALED, ids=["scaler-logreg", "two-scalers", "centred-forest"])
@pytest.mark.parametrize("order", ["F", "C"])
@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_scalers_applied_while_copying_columns_give_the_pipelines_floats(model, order, rows, seed):
    sample = np.random.default_rng(seed).normal(X.mean(axis=0), X.std(axis=0) * 3, size=(rows, 4))
    scalers, rest = leading_scalers(model)
    assert scalers and rest is not model
    matrix = np.empty((rows, 4), dtype=float, order=order)
    for j in range(4):
        fill_scaled(matrix[:, j], sample[:, j], scalers, j)
    assert np.array_equal(predict_proba(rest, matrix), model.predict_proba(sample))


def test_a_model_without_leading_scalers_is_left_whole():
    forest = MODELS[0]
    assert leading_scalers(forest) == ([], forest)
    # A scaler alone is the model, not a step before it.
    assert leading_scalers(make_pipeline(StandardScaler()))[0] == []
