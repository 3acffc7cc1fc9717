"""Features tagged pii are stored only as their keyed hash: in the prediction log and in reference samples."""

from __future__ import annotations

import pandas as pd
import pytest
from django.core.files.storage import storages

from monitoring.services.references import reference_dataset_for, reference_dataset_upload
from monitoring.windows import feature_kinds
from registry import services as registry
from serving import prediction_log
from serving import services as serving
from serving.models import PredictionLog
from serving.prediction_log import pii_hash

pytestmark = pytest.mark.django_db
PII = "mean radius"


@pytest.fixture
def pii_version(classifier_model, logreg):
    version = registry.model_version_register(model=classifier_model, artifact=logreg.artifact,
                                              evaluation_data=logreg.eval_csv)  # fmt: skip
    signature = version.signature
    signature["inputs"][0]["pii"] = True
    assert signature["inputs"][0]["name"] == PII
    return registry.model_version_register(model=classifier_model, artifact=logreg.artifact, signature=signature,
                                           evaluation_data=logreg.eval_csv)  # fmt: skip


def stored_csv(dataset) -> pd.DataFrame:
    with storages["artifacts"].open(dataset.path, "rb") as handle:
        return pd.read_csv(handle)


@pytest.mark.parametrize("source", ["evaluation", "upload"])
def test_reference_csvs_hold_the_pii_feature_only_hashed_as_the_log_does(pii_version, logreg, source):
    if source == "evaluation":
        dataset = reference_dataset_for(pii_version)
    else:
        dataset = reference_dataset_upload(version=pii_version, data=logreg.X_test.to_csv(index=False).encode())
    stored = stored_csv(dataset)
    clear = logreg.X_test[PII].tolist()
    assert stored[PII].str.startswith("hmac:").all()
    assert not set(map(str, clear)) & set(stored[PII].astype(str))
    assert set(stored["mean texture"]) <= set(logreg.X_test["mean texture"])  # other features as they were
    assert "prediction" in stored.columns  # the version predicted on the clear values

    row = {k: float(v) for k, v in logreg.X_test.iloc[0].items()}
    serving.predict(model_name="cancer", payload={"instances": [row]}, version=pii_version.version)
    prediction_log.prediction_log().flush()
    logged = PredictionLog.objects.get().inputs[0][PII]
    assert logged == pii_hash(row[PII]) and logged in set(stored[PII])  # the same hash as the log's: joinable
    assert PII not in feature_kinds(pii_version)[0]  # and drift never reads it
