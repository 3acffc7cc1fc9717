"""Train the demo's two breast-cancer models exactly as `seed_demo` does and save them as MLflow models.

Runs inside the MLflow venv (bench/.mlflow-venv), not the project's: `python bench/mlflow_models.py OUT_DIR`.
Same data (sklearn's bundled load_breast_cancer(as_frame=True)), same split (test_size=0.25, random_state=42), same
estimators and parameters as registry/management/commands/seed_demo.py; each model is saved with a signature
inferred from the training frame, as a user logging it would, so MLflow's scoring server checks inputs too.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.base import BaseEstimator
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

MODELS: dict[str, Callable[[], BaseEstimator]] = {
    "breast-cancer-logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    "breast-cancer-forest": lambda: RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1),
}
# MLflow 3 saves sklearn models with skops; the tree node storage must be named as trusted (we trained it here).
TRUSTED_TYPES = {"breast-cancer-forest": ["sklearn.tree._tree.Tree"]}


def save_all(out: Path) -> None:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=42)
    out.mkdir(parents=True, exist_ok=True)
    for name, build in MODELS.items():
        model = build().fit(X_train, y_train)
        path = out / name
        if path.exists():
            shutil.rmtree(path)
        signature = infer_signature(X_train, model.predict(X_train))
        mlflow.sklearn.save_model(model, str(path), signature=signature, skops_trusted_types=TRUSTED_TYPES.get(name))
        print(f"{name}: test accuracy {model.score(X_test, y_test):.3f}, saved to {path}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: mlflow_models.py OUT_DIR")
    save_all(Path(sys.argv[1]))
