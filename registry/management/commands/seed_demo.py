"""The demo: real models trained on scikit-learn's bundled datasets, registered the way a user would register them,
then each app's own demo on top: every installed app whose AppConfig names a `demo` (a dotted path to a function
taking the output), in `demo_order`, so the registry names no app above it.

Idempotent: a model that already has versions is left alone, and each app's demo seeds once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import skops.io as sio
from django.apps import apps
from django.core.management.base import BaseCommand
from django.utils.module_loading import import_string
from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from registry import services
from registry.models import RegisteredModel, Task


@dataclass(frozen=True)
class DemoModel:
    name: str
    task: str
    description: str
    dataset: str
    gate_rules: list[str]
    build: Any


DEMO_MODELS = [
    DemoModel(
        "breast-cancer-logreg",
        Task.CLASSIFICATION,
        "Logistic regression on standardised features: malignant (0) or benign (1) tumour.",
        "breast_cancer",
        ["accuracy >= 0.9", "roc_auc >= 0.95", "f1 >= production - 0.02"],
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    ),
    DemoModel(
        "breast-cancer-forest",
        Task.CLASSIFICATION,
        "100-tree random forest on the same data: the heavier model that micro-batching helps most.",
        "breast_cancer",
        ["accuracy >= 0.9", "f1 >= production - 0.02"],
        lambda: RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1),
    ),
    DemoModel(
        "diabetes-ridge",
        Task.REGRESSION,
        "Ridge regression: disease progression one year after baseline.",
        "diabetes",
        ["rmse <= 65", "r2 >= 0.3"],
        lambda: Ridge(alpha=0.1),
    ),
]


def _split(dataset: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    loader = {"breast_cancer": datasets.load_breast_cancer, "diabetes": datasets.load_diabetes}[dataset]
    X, y = loader(return_X_y=True, as_frame=True)
    return train_test_split(X, y, test_size=0.25, random_state=42)


class DemoOutput:
    """What an app's demo writes its progress to: call it with a line, or use it as a stream (`.write`)."""

    def __init__(self, stdout) -> None:
        self._stdout = stdout

    def write(self, text: str) -> None:
        self._stdout.write(text.rstrip("\n"))  # the command's stdout ends each write with one newline

    __call__ = write


class Command(BaseCommand):
    help = "Seed the demo models (trained on sklearn's bundled datasets) through the registry's services."

    def handle(self, *args, **opts) -> None:
        for demo in DEMO_MODELS:
            model = RegisteredModel.objects.filter(name=demo.name).first()
            if model is not None and model.versions.exists():
                self.stdout.write(f"{demo.name}: already seeded")
                continue
            if model is None:
                model = services.registered_model_create(
                    name=demo.name, task=demo.task, description=demo.description, gate_rules=demo.gate_rules,
                    tags={"demo": "true", "dataset": demo.dataset},
                )  # fmt: skip
            X_train, X_test, y_train, y_test = _split(demo.dataset)
            estimator = demo.build().fit(X_train, y_train)
            evaluation = X_test.assign(target=y_test).to_csv(index=False).encode()
            version = services.model_version_register(
                model=model,
                artifact=sio.dumps(estimator),
                filename=f"{demo.name}.skops",
                params={k: repr(v) for k, v in estimator.get_params(deep=False).items()},
                lineage={"source": "seed_demo", "dataset": f"sklearn.datasets.load_{demo.dataset}",
                         "split": "train_test_split(test_size=0.25, random_state=42)"},
                evaluation_data=evaluation,
            )  # fmt: skip
            if version.servable:
                services.alias_set(model=model, name=services.PRODUCTION_ALIAS, version=version)
            metrics = ", ".join(f"{k}={v:.3f}" for k, v in version.gate_report["metrics"].items())
            self.stdout.write(f"{version}: {version.status} ({metrics})")
        out = DemoOutput(self.stdout)
        for config in sorted((c for c in apps.get_app_configs() if getattr(c, "demo", None)),
                             key=lambda c: getattr(c, "demo_order", 100)):  # fmt: skip
            import_string(config.demo)(out)
