"""Reference samples per model version, stored as CSV datasets in the artifacts storage (beside the models).

From the evaluation sample given at registration, from an uploaded CSV, or from a window of production traffic.
The version's own predictions on the sample are stored with it, so predictions drift is checked like features.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import numpy as np
import pandas as pd
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import transaction

from monitoring.drift.report import NUMERIC, sorted_rows
from monitoring.models import ReferenceDataset, ReferenceSource
from monitoring.services.ood import ood_profile_build
from monitoring.windows import PREDICTION, Window, current_frame, feature_kinds, normalise
from registry.models import ModelVersion
from serving.model_cache import model_cache
from serving.prediction_log import pii_hash

MAX_REFERENCE_ROWS = 200_000


def _storage():
    return storages["artifacts"]


def reference_dataset_for(version: ModelVersion) -> ReferenceDataset | None:
    """The version's reference sample, made from its evaluation sample the first time it is needed."""
    dataset = ReferenceDataset.objects.filter(version=version).first()
    if dataset is None and version.evaluation_data_path:
        dataset = reference_dataset_from_evaluation(version=version)
    return dataset


@dataclass(frozen=True)
class ReferenceSample:
    frame: pd.DataFrame  # treat as read-only: it is shared by the runs of this process
    numeric_sorted: np.ndarray  # drift.report.sorted_rows of the numeric columns, in kinds order


def read_reference(dataset: ReferenceDataset, version: ModelVersion) -> ReferenceSample:
    """The sample's monitored columns, normalised, and its numeric columns sorted. Touches no database, so it can
    run beside a query; parsed and sorted once per process (a stored sample never changes: a new one gets a new
    path)."""
    return _read_reference(dataset.path, tuple(feature_kinds(version)[0].items()))


def reference_frame(version: ModelVersion) -> pd.DataFrame | None:
    dataset = reference_dataset_for(version)
    return read_reference(dataset, version).frame.copy() if dataset is not None else None


@lru_cache(maxsize=4)
def _read_reference(path: str, kinds: tuple[tuple[str, str], ...]) -> ReferenceSample:
    dtypes = {name: (float if kind == NUMERIC else str) for name, kind in kinds}
    with _storage().open(path, "rb") as handle:
        header = pd.read_csv(handle, nrows=0).columns
    usable = {name: dtype for name, dtype in dtypes.items() if name in header}
    with _storage().open(path, "rb") as handle:
        try:
            frame = pd.read_csv(handle, usecols=list(usable), dtype=usable, keep_default_na=False, na_values=[""])
        except ValueError:  # a numeric column holding text: parse everything as text, normalise() coerces
            handle.seek(0)
            frame = pd.read_csv(handle, usecols=list(usable), dtype=str, keep_default_na=False, na_values=[""])
    frame = normalise(frame, dict(kinds))
    numeric = [name for name, kind in kinds if kind == NUMERIC]
    return ReferenceSample(frame, sorted_rows(frame, numeric))


def _with_predictions(version: ModelVersion, frame: pd.DataFrame) -> pd.DataFrame:
    names = [f["name"] for f in version.signature["inputs"]]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ValidationError({"data": [f"the sample lacks the features: {', '.join(missing[:10])}"]})
    if frame.empty:
        raise ValidationError({"data": ["the sample has no rows"]})
    if len(frame) > MAX_REFERENCE_ROWS:
        frame = frame.sample(n=MAX_REFERENCE_ROWS, random_state=0)
    features = frame[names]
    try:
        predictions, _ = model_cache().get(version).predict(features.astype(object).values.tolist())
    except Exception as exc:  # the model refusing the sample is the user's data problem: say so
        raise ValidationError({"data": [f"the model failed on the sample: {exc}"]}) from None
    return _pii_hashed(features, version).assign(**{PREDICTION: predictions})


def _pii_hashed(features: pd.DataFrame, version: ModelVersion) -> pd.DataFrame:
    """The sample as stored: features tagged pii replaced by the keyed hash the prediction log keeps of them (drift
    never reads them: feature_kinds leaves them out), so the CSV holds no clear value."""
    pii = [f["name"] for f in version.signature["inputs"] if f.get("pii")]
    if not pii:
        return features
    hashed = {}
    for name in pii:
        values = features[name].astype(object).tolist()  # Python values, as the log hashes them (repr)
        hashed[name] = [None if pd.isna(v) else pii_hash(v) for v in values]
    return features.assign(**hashed)


def _store(
    version: ModelVersion,
    frame: pd.DataFrame,
    source: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ReferenceDataset:
    """Write the CSV, then point the version's reference at it; the previous file goes once that committed."""
    storage = _storage()
    path = storage.save(
        f"monitoring/{version.model.name}/v{version.version}/reference-{uuid.uuid4().hex}.csv",
        ContentFile(frame.to_csv(index=False).encode()),
    )
    try:
        with transaction.atomic():
            dataset, created = ReferenceDataset.objects.select_for_update().get_or_create(
                version=version,
                defaults={"source": source, "path": path, "rows": len(frame), "columns": list(frame.columns)},
            )
            old_path = None if created else dataset.path
            if not created:
                dataset.source, dataset.path, dataset.rows = source, path, len(frame)
                dataset.columns = list(frame.columns)
            dataset.window_start, dataset.window_end = since, until
            dataset.save()
            if old_path and old_path != path:
                transaction.on_commit(lambda: storage.delete(old_path))
    except Exception:
        storage.delete(path)  # nothing points at it: do not leave an orphan behind
        raise
    ood_profile_build(version=version, frame=frame)  # the OOD profile follows its reference sample
    return dataset


def reference_dataset_from_evaluation(*, version: ModelVersion) -> ReferenceDataset:
    if not version.evaluation_data_path:
        raise ValidationError({"source": [f"{version} was registered without an evaluation sample"]})
    with _storage().open(version.evaluation_data_path, "rb") as handle:
        frame = pd.read_csv(handle)
    return _store(version, _with_predictions(version, frame), ReferenceSource.EVALUATION)


def reference_dataset_upload(*, version: ModelVersion, data: bytes) -> ReferenceDataset:
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except Exception as exc:
        raise ValidationError({"data": [f"not readable CSV: {exc}"]}) from None
    return _store(version, _with_predictions(version, frame), ReferenceSource.UPLOAD)


def reference_dataset_from_traffic(*, version: ModelVersion, since: datetime, until: datetime) -> ReferenceDataset:
    if since >= until:
        raise ValidationError({"since": ["must be before until"]})
    frame = current_frame(version, Window(since=since, until=until, cap=MAX_REFERENCE_ROWS))
    if frame.empty:
        raise ValidationError({"since": [f"{version} logged no predictions between {since} and {until}"]})
    return _store(version, frame, ReferenceSource.TRAFFIC, since, until)
