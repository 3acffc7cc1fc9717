"""The feature store's part of `manage.py seed_demo`: breast-cancer measurements as features of patients, an
on-demand feature, and a model served by patient id.

- entity `patient` (join key patient_id) and view `tumour_measurements` with the dataset's 30 measurements plus
  `radius_ratio`, which is never stored: it is computed on demand from mean and worst radius;
- the 569 rows of sklearn's breast-cancer data pushed as patients 0..568 (once);
- model `breast-cancer-by-patient`: a logistic regression whose signature maps each input to its feature, so
  `{"instances": [{"patient_id": 7}]}` is enough to predict.
Idempotent: definitions are applied (no change the second time), rows and the model are only added when absent.
"""

from __future__ import annotations

from typing import Any

import skops.io as sio
from django.utils import timezone
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from features.on_demand import on_demand_feature

VIEW = "tumour_measurements"
MODEL = "breast-cancer-by-patient"


def _column(name: str) -> str:
    return name.replace(" ", "_")


@on_demand_feature(f"{VIEW}:radius_ratio", inputs=[f"{VIEW}:mean_radius", f"{VIEW}:worst_radius"])
def radius_ratio(values: dict[str, Any]) -> float | None:
    worst = values[f"{VIEW}:worst_radius"]
    return values[f"{VIEW}:mean_radius"] / worst if worst else None


def seed_features_demo(write) -> None:
    """Seed the demo feature store; `write` prints one line of progress."""
    from features.definitions import definitions_apply
    from features.models import FeatureView
    from features.services import feature_values_push

    X, y = datasets.load_breast_cancer(return_X_y=True, as_frame=True)
    features = [{"name": _column(c), "dtype": "float"} for c in X.columns]
    features.append({"name": "radius_ratio", "dtype": "float", "description": "on demand: mean / worst radius"})
    plan = definitions_apply(
        entities=[{"name": "patient", "join_key": "patient_id", "value_type": "int",
                   "description": "A patient of the Wisconsin breast-cancer study"}],
        views=[{"name": VIEW, "entity": "patient", "features": features, "ttl": "3650d", "owner": "demo",
                "description": "Cell-nucleus measurements of each patient's tumour (sklearn breast-cancer data)",
                "tags": {"demo": "true"}}],
    )  # fmt: skip
    for line in plan:
        write(f"features: {line}")
    view = FeatureView.objects.select_related("entity").get(name=VIEW)
    if not view.values.exists():
        stamp = timezone.now().isoformat()
        rows = [{"patient_id": int(i), "event_timestamp": stamp, **{_column(k): float(v) for k, v in r.items()}}
                for i, r in X.iterrows()]  # fmt: skip
        pushed = feature_values_push(view=view, rows=rows)
        write(f"features: {VIEW}: {pushed['stored']} patients stored, {pushed['online']} online")
    _seed_model(X, y, write)


def _seed_model(X, y, write) -> None:
    from registry import services
    from registry.models import RegisteredModel, Task
    from registry.signature import infer_signature

    model = RegisteredModel.objects.filter(name=MODEL).first()
    if model is not None and model.versions.exists():
        write(f"{MODEL}: already seeded")
        return
    if model is None:
        model = services.registered_model_create(
            name=MODEL, task=Task.CLASSIFICATION, tags={"demo": "true", "dataset": "breast_cancer"},
            gate_rules=["accuracy >= 0.9", "roc_auc >= 0.95"],
            description="The breast-cancer logistic regression, served by patient id from the feature store.",
        )  # fmt: skip
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=42)
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
    signature, _ = infer_signature(estimator, Task.CLASSIFICATION, X)
    for entry in signature["inputs"]:
        entry["feature"] = f"{VIEW}:{_column(entry['name'])}"
    version = services.model_version_register(
        model=model, artifact=sio.dumps(estimator), filename=f"{MODEL}.skops", signature=signature,
        lineage={"source": "seed_demo", "dataset": "sklearn.datasets.load_breast_cancer", "features": VIEW},
        evaluation_data=X_test.assign(target=y_test).to_csv(index=False).encode(),
    )  # fmt: skip
    if version.servable:
        services.alias_set(model=model, name=services.PRODUCTION_ALIAS, version=version)
    write(f"{version}: {version.status} (inputs from feature view {VIEW})")
