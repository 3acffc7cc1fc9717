"""Point-in-time training data: `get_historical_features(entity_df, ["view:feature", ...])`.

For each entity row (entity keys + an event timestamp) and each view, the newest value whose event time lies in
[row time - view TTL, row time], both ends inclusive; on equal event times the one created last wins (then the last
written, the highest id): the tie rule of every read (features/models.py FeatureValue). With `as_of_created=True` a
value also needs created time <= row time, so a late backfill cannot leak into training data. Every row comes back,
in its original order, with nulls where nothing qualifies.

The join runs in the database: the entity rows are loaded into a temporary table (COPY on Postgres), and one
correlated subquery per view picks each row's value down the (view, entity_key, event_ts desc, created_ts desc, id
desc) index: the same plan as a LATERAL join, in SQL that SQLite (the embedded default) also runs.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from django.core.exceptions import ValidationError
from django.db import connection

from config.db import long_statements
from features.models import FeatureValue, FeatureView
from features.retrieval import resolve_refs
from features.schema import EVENT_TIMESTAMP, entity_key, parse_timestamps

# Per entity row and view: the newest qualifying value, straight down the latest-as-of index.
_PICK = (
    "(SELECT f.data FROM {table} f WHERE f.view_id = %s AND f.entity_key = e.{key} AND f.event_ts <= e.ts "
    "AND f.event_ts >= e.{low}{created} ORDER BY f.event_ts DESC, f.created_ts DESC, f.id DESC LIMIT 1)"
)


def get_historical_features(
    entity_df: pd.DataFrame,
    features: list[str],
    *,
    as_of_created: bool = False,
    timestamp_column: str = EVENT_TIMESTAMP,
) -> pd.DataFrame:
    """entity_df with one column per requested feature ref appended, rows in their original order."""
    resolved = resolve_refs(features)
    views: dict[str, FeatureView] = {view.name: view for _, view, _ in resolved}
    join_keys = sorted({view.entity.join_key for view in views.values()})
    missing = [c for c in [*join_keys, timestamp_column] if c not in entity_df.columns]
    if missing:
        raise ValidationError({"entity_df": [f"missing column(s): {', '.join(missing)}"]})
    times = _row_times(entity_df[timestamp_column], timestamp_column)
    result = entity_df.copy()
    if len(entity_df) == 0:
        for ref, _, _ in resolved:
            result[ref] = pd.Series(dtype=object)
        return result
    picked = _point_in_time(entity_df, times, views, join_keys, as_of_created)
    for ref, view, feature in resolved:
        data = picked[view.name]
        result[ref] = pd.Series([d.get(feature) if d is not None else None for d in data], index=result.index)
    return result


def _point_in_time(entity_df, times, views, join_keys, as_of_created) -> dict[str, list[dict | None]]:
    view_list = list(views.values())
    table = f"features_entity_rows_{uuid.uuid4().hex[:12]}"
    key_columns = {jk: [None if pd.isna(v) else entity_key(v) for v in entity_df[jk].tolist()] for jk in join_keys}
    lows = [[_minus(t, view.ttl_seconds) for t in times] for view in view_list]
    rows = zip(range(len(entity_df)), times, *key_columns.values(), *lows, strict=True)
    columns = ["idx", "ts", *[f"k_{i}" for i in range(len(join_keys))], *[f"lo_{i}" for i in range(len(view_list))]]
    values_table = connection.ops.quote_name(FeatureValue._meta.db_table)
    selects = []
    params: list[Any] = []
    for i, view in enumerate(view_list):
        key_column = f"k_{join_keys.index(view.entity.join_key)}"
        created = " AND f.created_ts <= e.ts" if as_of_created else ""
        selects.append(_PICK.format(table=values_table, key=key_column, low=f"lo_{i}", created=created))
        params.append(view.pk)
    sql = f"SELECT {', '.join(selects)} FROM {table} e ORDER BY e.idx"  # noqa: S608 (names are ours)
    with long_statements(), connection.cursor() as cursor:  # the user waits for this join; it may be long
        _load(cursor, table, columns, len(join_keys), rows)
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
        cursor.execute(f"DROP TABLE {table}")
    return {view.name: [_parse(row[i]) for row in fetched] for i, view in enumerate(view_list)}


def _load(cursor, table: str, columns: list[str], key_count: int, rows) -> None:
    timestamp = "timestamp with time zone" if connection.vendor == "postgresql" else "datetime"
    types = ["integer", timestamp] + ["varchar(200)"] * key_count + [timestamp] * (len(columns) - 2 - key_count)
    definition = ", ".join(f"{name} {kind}" for name, kind in zip(columns, types, strict=True))
    cursor.execute(f"CREATE TEMPORARY TABLE {table} ({definition})")
    if connection.vendor == "postgresql":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow([value.isoformat() if hasattr(value, "isoformat") else value for value in row])
        buffer.seek(0)
        cursor.cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buffer)
        cursor.execute(f"ANALYZE {table}")
    else:
        adapt = connection.ops.adapt_datetimefield_value
        placeholders = ", ".join(["%s"] * len(columns))
        cursor.executemany(
            f"INSERT INTO {table} VALUES ({placeholders})",  # noqa: S608 (names are ours)
            [[adapt(v) if isinstance(v, datetime) else v for v in row] for row in rows],
        )


def _row_times(column: pd.Series, name: str) -> list[datetime]:
    """The rows' times in UTC, read as every write path reads times (schema.parse_timestamp: pandas' own reader
    would refuse mixed precision and read integers as nanoseconds). A datetime column without NaT converts as a
    whole: the same instants, several times faster than value by value."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype) and not column.isna().any():
        utc = column.dt.tz_localize(UTC) if column.dt.tz is None else column.dt.tz_convert(UTC)
        return list(utc.dt.to_pydatetime())
    return [moment.astimezone(UTC) for moment in parse_timestamps(column.tolist(), name)]


def _minus(moment: datetime, seconds: int) -> datetime:
    try:
        return moment - timedelta(seconds=seconds)
    except OverflowError:  # a row in year 1 with a long TTL
        return datetime.min.replace(tzinfo=UTC)


def _parse(raw: Any) -> dict[str, Any] | None:
    if raw is None or isinstance(raw, dict):
        return raw
    return json.loads(raw)
