"""Client fixtures: the modelworks_client package from this repo, a live server on the test database, and a client
that talks to it over real HTTP as a notebook would."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serving import model_cache as model_cache_module
from serving import prediction_log as prediction_log_module
from serving import routing
from serving.tokens import user_token_create

CLIENT_PACKAGE = Path(__file__).resolve().parents[2] / "modelworks_client"
if str(CLIENT_PACKAGE) not in sys.path:  # the client is its own package; the suite uses this repo's copy of it
    sys.path.insert(0, str(CLIENT_PACKAGE))

from modelworks_client import Client  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_serving_state(monkeypatch):
    """Empty route and model caches; a prediction log that writes only when a test flushes it."""
    routing.clear_cache()
    monkeypatch.setattr(model_cache_module.model_cache, "_value", None)
    monkeypatch.setattr(
        prediction_log_module.prediction_log,
        "_value",
        prediction_log_module.PredictionLogBuffer(flush_seconds=3600, max_rows=100_000, batch_rows=100_000),
    )
    yield
    routing.clear_cache()


@dataclass(frozen=True)
class Data:
    """Breast-cancer data as a data scientist holds it: a training frame and a held-out one, target column "y"."""

    train: pd.DataFrame
    test: pd.DataFrame

    @property
    def X_test(self) -> pd.DataFrame:
        return self.test.drop(columns=["y"])


@pytest.fixture(scope="session")
def cancer_data() -> Data:
    X, y = datasets.load_breast_cancer(return_X_y=True, as_frame=True)
    frame = X.assign(y=y)
    train, test = train_test_split(frame, test_size=0.25, random_state=0)
    return Data(train, test)


def fit_pipeline(data: Data, C: float = 1.0):
    """A fresh scikit-learn pipeline, fitted in the test as in a notebook."""
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    return pipeline.fit(data.train.drop(columns=["y"]), data.train["y"])


@pytest.fixture
def token(user) -> str:
    return user_token_create(user=user)[1]


@pytest.fixture
def mw(live_server, token):
    with Client(live_server.url, token=token, timeout=30) as client:
        yield client
