"""Batch ingest of a CSV or Parquet file into a view's offline store: in chunks, each checked and committed on its
own together with the job's progress, so a rerun of the same file (same content hash) resumes after the last
committed chunk. A chunk with a bad row stops the ingest with that row named; nothing of that chunk is stored.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from features import metrics
from features.models import FeatureView, IngestJob
from features.services import feature_rows_check, feature_values_store

DEFAULT_CHUNK = 10_000


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def count_rows(path: Path) -> int:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with path.open("rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)  # a header line, no embedded newlines in feature files


def _chunks(path: Path, size: int, skip: int) -> Iterator[pd.DataFrame]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        seen = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
            frame = batch.to_pandas()
            if seen + len(frame) > skip:
                yield frame.iloc[max(skip - seen, 0) :]
            seen += len(frame)
    elif suffix == ".csv":
        # Text in, typed by the view (not by pandas' per-chunk guess, which turns a column to strings on one typo).
        yield from pd.read_csv(path, chunksize=size, skiprows=range(1, skip + 1), dtype=str, keep_default_na=False)
    else:
        raise ValidationError({"file": [f"{path.name}: give a .csv or .parquet file"]})


def _from_text(dtype: str | None, text: str) -> Any:
    """A CSV cell as the view's type when it reads as one; otherwise the text, which the row check then names."""
    try:
        if dtype == "float":
            return float(text)
        if dtype == "int":
            return int(text) if text.lstrip("-").isdigit() else text
    except ValueError:
        return text
    if dtype == "bool" and text.lower() in ("true", "false", "1", "0"):
        return text.lower() in ("true", "1")
    return text


def _records(frame: pd.DataFrame, dtypes: dict[str, str]) -> list[dict[str, Any]]:
    """Rows as plain Python values: numpy scalars unwrapped, empty/NaN/NaT as absent (null), timestamps as datetimes."""
    records = []
    for row in frame.to_dict("records"):
        clean = {}
        for name, value in row.items():
            if value is None or value == "" or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
                continue
            if isinstance(value, str):
                value = _from_text(dtypes.get(str(name)), value)
            elif isinstance(value, pd.Timestamp):
                value = value.to_pydatetime()
            elif hasattr(value, "item"):
                value = value.item()
            clean[str(name)] = value
        records.append(clean)
    return records


def feature_file_ingest(*, view: FeatureView, path: Path, chunk_size: int = DEFAULT_CHUNK, restart: bool = False,
                        progress: Callable[[int], None] | None = None) -> IngestJob:  # fmt: skip
    """Ingest `path` into `view`; answers the finished job. Raises RowsRejected naming the file row (1 = first data
    row) and field of the first bad chunk, ValidationError for an unreadable file."""
    if not path.is_file():
        raise ValidationError({"file": [f"{path}: no such file"]})
    sha = file_sha256(path)
    job, _ = IngestJob.objects.get_or_create(view=view, file_sha256=sha, defaults={"file_name": path.name})
    if restart and job.rows_done:
        IngestJob.objects.filter(pk=job.pk).update(rows_done=0, finished_at=None)
        job.refresh_from_db()
    if job.finished_at is not None:
        return job
    if progress and job.rows_done:
        progress(job.rows_done)
    try:
        for frame in _chunks(path, chunk_size, job.rows_done):
            records = _records(frame, view.dtypes)
            if not records:
                continue
            checked = feature_rows_check(view=view, rows=records, first_row=job.rows_done + 1)
            with transaction.atomic():
                feature_values_store(view=view, rows=checked)
                job.rows_done += len(records)
                IngestJob.objects.filter(pk=job.pk).update(rows_done=job.rows_done)
            metrics.VALUES_WRITTEN.labels(view.name, "ingest").inc(len(records))
            if progress:
                progress(len(records))
    except (ValueError, OSError) as exc:  # pandas and pyarrow parse errors are ValueErrors
        raise ValidationError({"file": [f"{path.name}: {exc}"]}) from None
    job.finished_at = timezone.now()
    IngestJob.objects.filter(pk=job.pk).update(finished_at=job.finished_at)
    return job
