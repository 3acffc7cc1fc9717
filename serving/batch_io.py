"""Where batch jobs read and write: one interface over local paths, the artifacts storage, s3:// and az://.

Every location is a pyarrow filesystem and a path in it, so Parquet is read by row group and CSV by byte range
without fetching a whole file (a worker's memory is bounded by the chunk, not the file), and the same code writes
the output parts to any of them. Spellings:

    /data/in/day.parquet, file:///data/in/        a local path under MODELWORKS_BATCH_LOCAL_ROOTS
    artifacts:batch/in/day.csv                    the artifacts storage (ARTIFACT_STORAGE: local or s3)
    s3://bucket/key/                              MODELWORKS_BATCH_S3_* settings and the usual AWS_* credentials
    az://container/path/                          MODELWORKS_BATCH_AZURE_ACCOUNT_NAME and ..._ACCOUNT_KEY

A location ending in "/" (or naming a directory or prefix) is every .parquet or .csv file under it, in name order.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from django.conf import settings

CSV_BLOCK = 8 * 1024 * 1024
SUFFIXES = {"parquet": (".parquet", ".parq", ".pq"), "csv": (".csv",)}


class BatchIOError(Exception):
    """A location that cannot be used or read, in words for the caller."""


@dataclass(frozen=True)
class Location:
    uri: str
    fs: Any  # pyarrow.fs.FileSystem
    path: str

    def child(self, name: str) -> Location:
        return Location(self.uri.rstrip("/") + "/" + name, self.fs, self.path.rstrip("/") + "/" + name)


def _s3(bucket_and_key: str, *, endpoint: str | None, region: str | None) -> tuple[Any, str]:
    options: dict[str, Any] = {"connect_timeout": settings.MODELWORKS_BATCH_IO_TIMEOUT_S,
                               "request_timeout": settings.MODELWORKS_BATCH_IO_TIMEOUT_S}  # fmt: skip
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        options.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options), bucket_and_key


def _local(path: str, roots: list[str]) -> tuple[Any, str]:
    resolved = os.path.realpath(path)
    if not any(
        resolved == root or resolved.startswith(root.rstrip("/") + "/") for root in map(os.path.realpath, roots)
    ):
        raise BatchIOError(f"{path!r} is outside the local batch roots (MODELWORKS_BATCH_LOCAL_ROOTS)")
    return pafs.LocalFileSystem(), resolved


def _artifacts(name: str) -> tuple[Any, str]:
    if ".." in PurePosixPath(name).parts or name.startswith("/"):
        raise BatchIOError("an artifacts: location is a relative path without '..'")
    if settings.ARTIFACT_STORAGE == "s3":
        options = settings.STORAGES["artifacts"]["OPTIONS"]
        prefix = (options.get("location") or "").strip("/")
        key = f"{options['bucket_name']}/{prefix + '/' if prefix else ''}{name}"
        return _s3(key, endpoint=options.get("endpoint_url"), region=options.get("region_name"))
    if settings.ARTIFACT_STORAGE != "local":
        raise BatchIOError(f"artifacts: locations are not supported with ARTIFACT_STORAGE={settings.ARTIFACT_STORAGE}")
    root = settings.STORAGES["artifacts"]["OPTIONS"]["location"]
    return pafs.LocalFileSystem(), os.path.join(os.path.realpath(root), name)


def locate(uri: str, *, writing: bool = False) -> Location:
    """The filesystem and path a location names; BatchIOError when it is misspelt or not allowed."""
    if not isinstance(uri, str) or not uri.strip():
        raise BatchIOError("a location is a non-empty string")
    uri = uri.strip()
    if uri.startswith("s3://"):
        if not uri[5:].split("/", 1)[0]:
            raise BatchIOError("an s3:// location names a bucket: s3://bucket/key")
        fs, path = _s3(uri[5:], endpoint=settings.MODELWORKS_BATCH_S3_ENDPOINT_URL or None,
                       region=settings.MODELWORKS_BATCH_S3_REGION or None)  # fmt: skip
    elif uri.startswith("az://"):
        if not settings.MODELWORKS_BATCH_AZURE_ACCOUNT_NAME:
            raise BatchIOError("az:// locations need MODELWORKS_BATCH_AZURE_ACCOUNT_NAME (and its key)")
        fs = pafs.AzureFileSystem(account_name=settings.MODELWORKS_BATCH_AZURE_ACCOUNT_NAME,
                                  account_key=settings.MODELWORKS_BATCH_AZURE_ACCOUNT_KEY or None)  # fmt: skip
        path = uri[5:]
    elif uri.startswith("artifacts:"):
        name = uri[len("artifacts:") :]
        if writing and not name.startswith("batch/"):
            raise BatchIOError("output in the artifacts storage goes under artifacts:batch/")
        fs, path = _artifacts(name)
    elif uri.startswith("file://") or uri.startswith("/"):
        fs, path = _local(uri[len("file://") :] if uri.startswith("file://") else uri,
                          settings.MODELWORKS_BATCH_LOCAL_ROOTS)  # fmt: skip
    else:
        raise BatchIOError(f"{uri[:60]!r}: use an absolute path, file://, artifacts:, s3:// or az://")
    return Location(uri, fs, path)


def input_files(uri: str, fmt: str) -> list[Location]:
    """The files a location names: itself, or the .parquet/.csv files under a directory or prefix."""
    where = locate(uri)
    try:
        info = where.fs.get_file_info(where.path)
        if info.type == pafs.FileType.File and not uri.endswith("/"):
            return [where]
        selector = pafs.FileSelector(where.path.rstrip("/"), recursive=True, allow_not_found=True)
        found = sorted(i.path for i in where.fs.get_file_info(selector) if i.type == pafs.FileType.File)
    except OSError as exc:
        raise BatchIOError(f"cannot read {uri}: {exc}") from None
    base = where.path.rstrip("/")
    files = [where.child(p[len(base) + 1 :]) for p in found if p.lower().endswith(SUFFIXES[fmt])]
    if not files:
        raise BatchIOError(f"no {fmt} files at {uri}")
    return files


def format_of(uri: str) -> str | None:
    lowered = uri.lower().rstrip("/")
    return next((fmt for fmt, suffixes in SUFFIXES.items() if lowered.endswith(suffixes)), None)


def plan(file: Location, fmt: str, chunk_rows: int) -> tuple[list[str], list[dict[str, Any]]]:
    """(the file's columns, its chunks): each chunk a JSON source for read_chunk, with its rows and first row."""
    try:
        return _plan_parquet(file, chunk_rows) if fmt == "parquet" else _plan_csv(file, chunk_rows)
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise BatchIOError(f"cannot read {file.uri} as {fmt}: {exc}") from None


def _plan_parquet(file: Location, chunk_rows: int) -> tuple[list[str], list[dict[str, Any]]]:
    with file.fs.open_input_file(file.path) as handle:
        meta = pq.ParquetFile(handle).metadata
        columns = [meta.schema.column(i).name for i in range(meta.num_columns)]
        chunks, groups, rows, first = [], [], 0, 0
        for group in range(meta.num_row_groups):
            groups.append(group)
            rows += meta.row_group(group).num_rows
            if rows >= chunk_rows or group == meta.num_row_groups - 1:
                chunks.append({"uri": file.uri, "format": "parquet", "row_groups": groups, "first_row": first,
                               "rows": rows})  # fmt: skip
                first += rows
                groups, rows = [], 0
    return columns, [c for c in chunks if c["rows"]]


def _plan_csv(file: Location, chunk_rows: int) -> tuple[list[str], list[dict[str, Any]]]:
    """One pass over the bytes, counting lines: chunks start at line starts, so each knows its first row number.
    (A quoted field with a line break in it is not supported: such a file must be Parquet.)"""
    with file.fs.open_input_stream(file.path) as stream:
        head = b""
        while b"\n" not in head:
            block = stream.read(CSV_BLOCK)
            if not block:
                break
            head += block
        header_line, _, rest = head.partition(b"\n")
        columns = list(pd.read_csv(io.BytesIO(header_line + b"\n"), nrows=0).columns)
        base = len(header_line) + 1  # the file offset of block[0]
        chunks: list[dict[str, Any]] = []
        start, lines, first, block = base, 0, 0, rest

        def cut(end: int) -> None:
            nonlocal start, lines, first
            chunks.append({"uri": file.uri, "format": "csv", "offset": start, "length": end - start,
                           "first_row": first, "rows": lines, "columns": columns})  # fmt: skip
            first, start, lines = first + lines, end, 0

        while True:
            position = 0
            while (newline := block.find(b"\n", position)) >= 0:
                lines, position = lines + 1, newline + 1
                if lines == chunk_rows:
                    cut(base + position)
            more = stream.read(CSV_BLOCK)
            if not more:
                if block[position:].strip():
                    lines += 1  # a last line without a line break
                if lines:
                    cut(base + len(block))
                break
            block, base = block[position:] + more, base + position
    return columns, chunks


def read_chunk(source: dict[str, Any], columns: list[str] | None = None) -> pa.Table | pd.DataFrame:
    """The chunk's rows (only `columns`, when given): Parquet as an Arrow table with its own types, CSV as a
    DataFrame of strings (the scorer converts them)."""
    where = locate(source["uri"])
    try:
        if source["format"] == "parquet":
            with where.fs.open_input_file(where.path) as handle:
                # One thread: a batch worker is one of a pool sized to the machine's cores, and decoding on
                # more threads only contends with the other workers (it measured slower with two workers).
                return pq.ParquetFile(handle).read_row_groups(source["row_groups"], columns=columns, use_threads=False)
        with where.fs.open_input_file(where.path) as handle:
            data = handle.read_at(source["length"], source["offset"])
        frame = pd.read_csv(
            io.BytesIO(data),
            header=None,
            names=source["columns"],
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
        )
        return frame if columns is None else frame[columns]
    except (OSError, pa.ArrowException) as exc:
        raise BatchIOError(f"cannot read {source['uri']}: {exc}") from None


def _atomic_write(where: Location, write) -> None:
    """Write through `write(stream)`; on a local disk into a temporary name then renamed, so a reader never sees
    half a file (an S3 or Azure object appears only when its upload completes)."""
    parent = where.path.rsplit("/", 1)[0]
    where.fs.create_dir(parent, recursive=True)
    local = isinstance(where.fs, pafs.LocalFileSystem)
    target = f"{parent}/.tmp-{uuid.uuid4().hex}" if local else where.path
    try:
        with where.fs.open_output_stream(target) as stream:
            write(stream)
        if local:
            os.replace(target, where.path)
    finally:
        if local and os.path.exists(target):
            os.unlink(target)


def write_table(where: Location, table: pa.Table, dictionary: list[str] | bool = True) -> None:
    """`dictionary`: the columns to dictionary-encode (all by default). Columns of distinct floats (probabilities)
    gain nothing from it and cost the writer most of its time trying (25 ms vs 9 ms for 100,000 rows)."""
    # Encoded in memory and written in one piece: the writer's many small writes to a file cost more than the copy
    # (a 100,000-row part: about 2 ms of 8).
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, use_dictionary=dictionary)
    encoded = sink.getvalue()
    _atomic_write(where, lambda stream: stream.write(encoded))


def write_bytes(where: Location, data: bytes) -> None:
    _atomic_write(where, lambda stream: stream.write(data))


def read_bytes(where: Location) -> bytes | None:
    """The file's bytes, or None when there is no such file."""
    try:
        if where.fs.get_file_info(where.path).type != pafs.FileType.File:
            return None
        with where.fs.open_input_stream(where.path) as stream:
            return stream.read()
    except OSError as exc:
        raise BatchIOError(f"cannot read {where.uri}: {exc}") from None
