"""The data drift is measured on: a version's reference sample and a current window of the prediction log.

Both come back as DataFrames with one column per monitored feature (signature order) plus PREDICTION. Categorical
values are compared as text ("true"/"false" for booleans), the same whichever path read them.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from django.db import connection
from django.db.models import QuerySet

from config.db import long_statements
from monitoring.drift.report import CATEGORICAL, NUMERIC
from registry.models import ModelVersion, Task
from serving.models import Outcome, PredictionLog, logged_outputs

PREDICTION = "prediction"
# A version's production traffic: the requests it answered, routed to it or as the fallback. Mirrored copies
# (Outcome.shadows()) never reached a client, and a request nobody answered has no prediction to measure.
ANSWERED = (Outcome.OK, Outcome.FALLBACK)


def feature_kinds(version: ModelVersion) -> tuple[dict[str, str], list[str]]:
    """Monitored columns and their kind; pii features are left out (the log holds only their keyed hash)."""
    kinds: dict[str, str] = {}
    skipped = []
    for feature in version.signature["inputs"]:
        if feature.get("pii"):
            skipped.append(feature["name"])
            continue
        kinds[feature["name"]] = CATEGORICAL if feature.get("dtype") in ("category", "bool") else NUMERIC
    kinds[PREDICTION] = NUMERIC if version.model.task == Task.REGRESSION else CATEGORICAL
    return kinds, skipped


def as_category(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text.lower() if text in ("True", "False") else text


def normalise(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """The frame's monitored columns, numeric as float and categorical as text (missing columns: all missing)."""
    columns = {}
    for name, kind in kinds.items():
        column = frame[name] if name in frame.columns else pd.Series([None] * len(frame), dtype=object)
        if kind == NUMERIC:
            columns[name] = pd.to_numeric(column, errors="coerce").astype(float).reset_index(drop=True)
        else:
            columns[name] = column.map(as_category).reset_index(drop=True)
    return pd.DataFrame(columns)


@dataclass(frozen=True)
class Window:
    since: datetime | None = None
    until: datetime | None = None
    last_rows: int | None = None
    cap: int = 100_000


def answered_logs(version: ModelVersion, window: Window) -> QuerySet[PredictionLog]:
    """The log rows of this version's production traffic in the window (see ANSWERED)."""
    logs = PredictionLog.objects.filter(model_name=version.model.name, version=version.version, outcome__in=ANSWERED)
    if window.since is not None:
        logs = logs.filter(created_at__gte=window.since)
    if window.until is not None:
        logs = logs.filter(created_at__lt=window.until)
    return logs


def current_frame(version: ModelVersion, window: Window) -> pd.DataFrame:
    """Logged rows of this version in the window (batched requests flattened), sampled down to window.cap."""
    kinds, _ = feature_kinds(version)
    if connection.vendor == "postgresql":
        with long_statements():  # a large window's count and COPY may outlast a web process's statement bound
            frame = _current_frame_postgres(version, kinds, window)
    else:
        frame = _current_frame_python(version, kinds, window)
    return normalise(frame, kinds)


def _where(version: ModelVersion, window: Window) -> tuple[str, list[Any]]:
    clauses = ["l.model_name = %s", "l.version = %s", "l.outcome = ANY(%s)"]
    params: list[Any] = [version.model.name, version.version, [str(outcome) for outcome in ANSWERED]]
    if window.since is not None:
        clauses.append("l.created_at >= %s")
        params.append(window.since)
    if window.until is not None:
        clauses.append("l.created_at < %s")
        params.append(window.until)
    return " AND ".join(clauses), params


def _current_frame_postgres(version: ModelVersion, kinds: dict[str, str], window: Window) -> pd.DataFrame:
    """Postgres unpacks the JSON and streams CSV (COPY): far cheaper than decoding each row's JSON in Python."""
    selects, params = [], []
    for name in kinds:
        if name == PREDICTION:
            # The SQL twin of serving.models.logged_outputs: the row's n-th prediction.
            selects.append("l.outputs->'predictions'->>(e.n::int - 1)")
        else:
            selects.append("e.value->>%s")
            params.append(name)
    where, where_params = _where(version, window)
    # Only fixed SQL fragments are joined here; every value (feature names included) is a bound parameter.
    inner = (
        f"SELECT {', '.join(selects)}, l.created_at AS t FROM serving_predictionlog l"  # noqa: S608
        " CROSS JOIN LATERAL jsonb_array_elements(l.inputs) WITH ORDINALITY AS e(value, n)"
        f" WHERE {where}"
    )
    params += where_params
    if window.last_rows:
        inner = f"SELECT * FROM ({inner} ORDER BY l.created_at DESC, e.n LIMIT %s) latest"  # noqa: S608
        params.append(window.last_rows)
    elif _requests_in(version, window) > window.cap:
        # Sampling in the database only when the window is surely larger than the cap: the random sort costs.
        inner = f"SELECT * FROM ({inner}) w ORDER BY random() LIMIT %s"  # noqa: S608
        params.append(window.cap)
    names = [*kinds, "_t"]
    dtypes = {name: (float if kind == NUMERIC else str) for name, kind in kinds.items()}
    with connection.cursor() as cursor:
        sql = cursor.cursor.mogrify(inner, params).decode()
        frame = _copy_into_frame(cursor.cursor, f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", names, dtypes)
    if frame is None:
        return pd.DataFrame({name: pd.Series(dtype=dtypes[name]) for name in kinds})
    frame = frame[list(kinds)]
    return frame.sample(n=window.cap, random_state=0) if len(frame) > window.cap else frame


def _copy_into_frame(raw_cursor, copy_sql: str, names: list[str], dtypes: dict) -> pd.DataFrame | None:
    """Stream COPY's CSV through a pipe into pandas: parsing overlaps the database's work instead of following it.

    The producer thread only drives this connection's raw psycopg2 cursor; the caller's thread touches neither the
    connection nor the cursor until the thread has finished.
    """
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "w", encoding="utf-8") as sink:
                raw_cursor.copy_expert(copy_sql, sink)
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    producer = threading.Thread(target=produce, name="monitoring-copy", daemon=True)
    producer.start()
    with os.fdopen(read_fd, "r", encoding="utf-8") as source:
        try:
            frame = pd.read_csv(source, names=names, header=None, dtype=dtypes, keep_default_na=False, na_values=[""])
        except pd.errors.EmptyDataError:
            frame = None
        finally:
            source.read()  # drain, so the producer can never block on a full pipe
    producer.join()
    if failure:
        raise failure[0]
    return frame


def _requests_in(version: ModelVersion, window: Window) -> int:
    return answered_logs(version, window).count()


def _current_frame_python(version: ModelVersion, kinds: dict[str, str], window: Window) -> pd.DataFrame:
    logs = answered_logs(version, window)
    rows = []
    for inputs, outputs in logs.order_by("-created_at").values_list("inputs", "outputs").iterator(chunk_size=2000):
        predictions, _ = logged_outputs(outputs)
        for row, prediction in zip(inputs, predictions, strict=False):
            rows.append({**row, PREDICTION: prediction})
        if window.last_rows and len(rows) >= window.last_rows:
            rows = rows[: window.last_rows]
            break
    frame = pd.DataFrame(rows, columns=list(kinds))
    return frame.sample(n=window.cap, random_state=0) if len(frame) > window.cap else frame
