"""Batch scoring: a job over files, planned into chunks that Celery workers claim and score in parallel.

The life of a job
- `batch_job_create` resolves the version once (a rollout mid-job cannot mix versions), checks the locations and
  queues `batch_plan`. Planning lists the input files, cuts them into chunks (Parquet row groups, CSV byte ranges at
  line starts, each with its first row number) and queues `parallelism` runners (`batch_work`).
- A runner claims one chunk (SELECT ... FOR UPDATE SKIP LOCKED: two runners never get the same one), validates its
  rows against the signature (bad rows go to the chunk's rejects with row number and reason), scores the rest in one
  vectorised call and writes the chunk's one Parquet part, named by its index: a chunk scored twice writes the same
  part again, never a second one. The transaction that commits its counts claims the next chunk, for up to
  MODELWORKS_BATCH_RUNNER_S, then the runner queues the next runner (other jobs' runners get the worker in between).
- The chunk that completes the job writes rejects.csv and then `_manifest.json`, last: a reader that starts from the
  manifest never sees half a result, and parts a cancelled or failed job left behind are in no manifest.

Durability: chunk state is in Postgres; a chunk is leased for MODELWORKS_BATCH_CHUNK_LEASE_S, its task's hard time
limit, so a chunk still claimed after that lost its worker and is claimed again. The watchdog (beat, every minute)
queues runners for jobs that have claimable chunks, so a job whose workers all died goes on once one is back.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import socket
import time
from datetime import timedelta
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import sklearn
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from sklearn.linear_model._base import LinearClassifierMixin, LinearModel
from sklearn.pipeline import Pipeline
from threadpoolctl import ThreadpoolController

from registry import refs
from registry import selectors as registry_selectors
from registry import services as registry
from registry.models import RegisteredModel
from serving import batch_io, fast_paths
from serving.batch_models import BatchChunk, BatchJob, BatchSchedule, ChunkStatus, JobStatus
from serving.model_cache import model_cache
from serving.validation import FLOAT64_MAX

logger = logging.getLogger(__name__)

MAX_PASSTHROUGH = 50
REJECT_COLUMNS = ["file", "row", "field", "reason"]


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


def _location(field: str, uri: Any, *, writing: bool = False) -> batch_io.Location:
    try:
        return batch_io.locate(uri, writing=writing)
    except batch_io.BatchIOError as exc:
        raise _invalid(field, str(exc)) from None


# --- Creating, cancelling ----------------------------------------------------------------------------------------


@transaction.atomic
def batch_job_create(
    *, model: RegisteredModel, input_uri: str, output_uri: str, version_ref: Any = None,
    input_format: str | None = None, passthrough: list[str] | None = None, chunk_rows: int | None = None,
    parallelism: int | None = None, max_reject_share: float | None = None, actor: Any = None,
    schedule: BatchSchedule | None = None,
) -> BatchJob:  # fmt: skip
    """A pending job, queued for planning once this transaction commits. ValidationError keyed by field."""
    if version_ref in (None, ""):
        version = registry_selectors.production_version(model)
        if version is None:
            raise _invalid("version", f"{model.name} has no production alias: name a version or an alias")
    else:
        version = refs.resolve(model, version_ref)
    if not version.servable:
        raise _invalid("version", f"{version} is {version.status} and cannot score anything")
    fmt = input_format or batch_io.format_of(input_uri if isinstance(input_uri, str) else "") or "parquet"
    if fmt not in batch_io.SUFFIXES:
        raise _invalid("input_format", "parquet or csv")
    _location("input", input_uri)
    output = _location("output", output_uri, writing=True)
    try:
        if batch_io.read_bytes(output.child("_manifest.json")) is not None:
            raise _invalid("output", f"{output_uri} already holds a finished result (_manifest.json): pick another")
        files = batch_io.input_files(input_uri, fmt)
    except batch_io.BatchIOError as exc:
        raise _invalid("input", str(exc)) from None
    del files
    passthrough = passthrough or []
    if not isinstance(passthrough, list) or not all(isinstance(c, str) and c for c in passthrough):
        raise _invalid("passthrough", "a list of column names")
    if len(passthrough) > MAX_PASSTHROUGH:
        raise _invalid("passthrough", f"at most {MAX_PASSTHROUGH} columns")
    chunk_rows = chunk_rows or settings.MODELWORKS_BATCH_CHUNK_ROWS
    if not 1 <= chunk_rows <= 10_000_000:
        raise _invalid("chunk_rows", "between 1 and 10,000,000")
    parallelism = parallelism or settings.MODELWORKS_BATCH_PARALLELISM
    if not 1 <= parallelism <= 1000:
        raise _invalid("parallelism", "between 1 and 1000")
    share = settings.MODELWORKS_BATCH_MAX_REJECT_SHARE if max_reject_share is None else max_reject_share
    if not 0 <= share <= 1:
        raise _invalid("max_reject_share", "a share between 0 and 1")
    job = BatchJob.objects.create(
        model=model, version=version, version_ref="" if version_ref is None else str(version_ref),
        input_uri=input_uri.strip(), input_format=fmt, output_uri=output_uri.strip(), passthrough=passthrough,
        chunk_rows=chunk_rows, parallelism=parallelism, max_reject_share=share, schedule=schedule,
        created_by=actor if getattr(actor, "pk", None) and not hasattr(actor, "api_key_scopes") else None,
    )  # fmt: skip
    from serving import tasks

    transaction.on_commit(lambda: tasks.batch_plan.apply_async((job.pk,), queue=settings.MODELWORKS_BATCH_QUEUE))
    return job


def batch_job_cancel(*, job: BatchJob, actor: Any = None) -> BatchJob:
    """Stop the job: chunks not claimed yet never run; a chunk being scored finishes its part, which no manifest
    lists. A finished job is left as it is (ValidationError)."""
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job.pk)
        if job.status in JobStatus.finished():
            raise _invalid("status", f"the job is already {job.status}")
        _stop(job, JobStatus.CANCELLED, f"cancelled by {getattr(actor, 'username', None) or 'the platform'}")
    return job


def _stop(job: BatchJob, status: str, error: str) -> None:
    """Inside the job's row lock: finish it as `status`, cancel the chunks nobody claimed, record the summary."""
    job.status, job.error, job.finished_at = status, error, timezone.now()
    job.save(update_fields=["status", "error", "finished_at"])
    job.chunks.filter(status=ChunkStatus.PENDING).update(status=ChunkStatus.CANCELLED)
    _record_summary(job)


# --- Planning ----------------------------------------------------------------------------------------------------


def batch_job_plan(*, job_id: int) -> int:
    """Cut a pending job into chunks and queue its runners; how many chunks. Unreadable input fails the job."""
    job = BatchJob.objects.select_related("version", "model").get(pk=job_id)
    if job.status != JobStatus.PENDING:
        return job.chunks_total
    features = [f["name"] for f in job.version.signature["inputs"]]
    try:
        planned: list[dict[str, Any]] = []
        for file in batch_io.input_files(job.input_uri, job.input_format):
            columns, chunks = batch_io.plan(file, job.input_format, job.chunk_rows)
            missing = [c for c in [*features, *job.passthrough] if c not in columns]
            if missing:
                raise batch_io.BatchIOError(f"{file.uri} has no column {', '.join(map(repr, missing[:5]))}")
            planned.extend(chunks)
    except batch_io.BatchIOError as exc:
        with transaction.atomic():
            job = BatchJob.objects.select_for_update().get(pk=job_id)
            if job.status == JobStatus.PENDING:
                _stop(job, JobStatus.FAILED, str(exc))
        return 0
    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job_id)
        if job.status != JobStatus.PENDING:
            return 0
        BatchChunk.objects.bulk_create(
            [BatchChunk(job=job, index=i, source=c, rows=c["rows"]) for i, c in enumerate(planned)]
        )
        job.status, job.started_at = JobStatus.RUNNING, timezone.now()
        job.rows_total, job.chunks_total = sum(c["rows"] for c in planned), len(planned)
        job.save(update_fields=["status", "started_at", "rows_total", "chunks_total"])
        if not planned:
            _finish(job)
    _queue_runners(job, min(job.parallelism, len(planned)))
    return len(planned)


def _queue_runners(job: BatchJob, count: int) -> None:
    from serving import tasks

    for _ in range(count):
        transaction.on_commit(lambda: tasks.batch_work.apply_async((job.pk,), queue=settings.MODELWORKS_BATCH_QUEUE))


# --- Running chunks ----------------------------------------------------------------------------------------------


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def batch_chunk_claim(*, job_id: int) -> BatchChunk | None:
    """The next chunk of a running job nobody holds (pending, or its lease ran out), now leased to this process.

    The claim's commit does not wait for the disk (Postgres' synchronous_commit off, for this transaction only: a
    few ms a chunk): a claim lost in a database crash leaves the chunk pending, and this worker's commit of it then
    finds no claim of its attempt and counts nothing, so the chunk is scored again, never twice."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        return _claim(job_id)


def _claim(job_id: int) -> BatchChunk | None:
    """Inside a transaction: claim the next chunk (batch_chunk_claim)."""
    now = timezone.now()
    chunk = (
        BatchChunk.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(job_id=job_id, job__status=JobStatus.RUNNING)
        .filter(Q(status=ChunkStatus.PENDING) | Q(status=ChunkStatus.RUNNING, lease_until__lt=now))
        .order_by("index")
        .first()
    )
    if chunk is None:
        return None
    chunk.status, chunk.attempt, chunk.claimed_by = ChunkStatus.RUNNING, chunk.attempt + 1, _worker_name()
    chunk.lease_until = now + timedelta(seconds=settings.MODELWORKS_BATCH_CHUNK_LEASE_S)
    chunk.save(update_fields=["status", "attempt", "claimed_by", "lease_until"])
    return chunk


def batch_work_for(*, job_id: int, seconds: float) -> tuple[int, bool]:
    """Claim and score chunks of the job until none is left or `seconds` have passed (one chunk at least): (how many
    it scored, whether it stopped for time). One runner scoring chunk after chunk saves a Celery round trip per
    chunk, which measured as long as scoring a 100,000-row chunk of the logistic regression (about 60 ms); each
    chunk's commit claims the next in the same transaction."""
    deadline, scored = time.monotonic() + seconds, 0
    job = BatchJob.objects.select_related("version__model").get(pk=job_id)
    # Threads for BLAS and OpenMP: the pool of worker processes is the parallelism (Celery's concurrency is the cores
    # by default), and a process's own threads on top only contend with the other workers' for the same cores.
    with _threadpools().limit(limits=settings.MODELWORKS_BATCH_THREADS):
        chunk = batch_chunk_claim(job_id=job_id)
        while chunk is not None:
            committed, chunk = _score_and_commit(job, chunk, deadline)
            if not committed:
                return scored, False
            scored += 1
    return scored, time.monotonic() >= deadline


@functools.cache
def _threadpools() -> ThreadpoolController:
    """The BLAS and OpenMP libraries this process has loaded (all of them once this module is imported), found once:
    finding them is most of the 4 ms that threadpoolctl's threadpool_limits takes."""
    return ThreadpoolController()


def _score_and_commit(job: BatchJob, chunk: BatchChunk, deadline: float) -> tuple[bool, BatchChunk | None]:
    """Score the claimed chunk and commit it: (whether it was scored, the next chunk, claimed in the same
    transaction while the deadline has not passed). A chunk that cannot be scored fails the job."""
    started = time.perf_counter()
    try:
        scored, rejects = score_chunk(job, chunk)
    except Exception as exc:  # unreadable input, a model that fails, the soft time limit: the job cannot complete
        if not isinstance(exc, batch_io.BatchIOError):
            logger.exception("%s could not be scored", chunk)
        reason = str(exc) if isinstance(exc, batch_io.BatchIOError) else f"{type(exc).__name__}: {exc}"
        with transaction.atomic():
            locked = BatchJob.objects.select_for_update().get(pk=job.pk)
            if locked.status == JobStatus.RUNNING:
                _stop(locked, JobStatus.FAILED, f"chunk {chunk.index}: {reason}"[:2000])
        return False, None
    return True, _commit_chunk(chunk, scored=scored, rejected=len(rejects), seconds=time.perf_counter() - started,
                               claim_next=time.monotonic() < deadline)  # fmt: skip


def _part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def score_chunk(job: BatchJob, chunk: BatchChunk) -> tuple[int, list[dict[str, Any]]]:
    """Read, validate, score and write the chunk's part (and its rejects, when it has any); (rows scored, rejects)."""
    loaded = model_cache().get(job.version)
    features = job.version.signature["inputs"]
    table = batch_io.read_chunk(chunk.source, list(dict.fromkeys([*(f["name"] for f in features), *job.passthrough])))
    columns, fields, reasons, good = checked_columns(table, features, loaded.float_limit)
    every = bool(good.all())
    first = chunk.source["first_row"]
    rejects = [{"file": chunk.source["uri"], "row": first + int(i), "field": fields[i], "reason": reasons[i]}
               for i in np.flatnonzero(~good)]  # fmt: skip
    out: dict[str, Any] = {name: _kept(table[name], good, every) for name in job.passthrough}
    out["prediction"] = np.array([])
    if good.any():
        X, rest = _model_input(columns, features, good, loaded)
        predictions, probabilities = _predict(loaded, X, rest, _all_finite(columns, features, good))
        loaded.record_call(int(good.sum()))
        out["prediction"] = predictions
        if probabilities is not None:
            for k, label in enumerate(loaded.classes or range(probabilities.shape[1])):
                out[f"probability_{label}"] = probabilities[:, k]
    output = batch_io.locate(job.output_uri, writing=True)
    if rejects:
        batch_io.write_bytes(output.child(f"_rejects/{chunk.index:05d}.csv"),
                             pd.DataFrame(rejects, columns=REJECT_COLUMNS).to_csv(index=False).encode())  # fmt: skip
    batch_io.write_table(output.child(_part_name(chunk.index)), pa.table(out), dictionary=["prediction"])
    return int(good.sum()), rejects


def _kept(column: Any, good: np.ndarray, every: bool) -> Any:
    """A pass-through column's good rows: an Arrow column as it was read (no copy when every row is good)."""
    if isinstance(column, pa.ChunkedArray):
        return column if every else column.filter(pa.array(good))
    return column.to_numpy()[good]


def _column_major(estimator: Any) -> bool:
    """Whether the model multiplies the input matrix (a linear model, alone or after a pipeline's transforms): it
    reads a column-major matrix as fast, and one is built from the columns several times faster. Trees walk rows
    and would copy it back to row-major."""
    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    return isinstance(final, LinearModel | LinearClassifierMixin)


def _model_input(columns: dict[str, np.ndarray], features: list[dict], good: np.ndarray, loaded: Any) -> Any:
    """The model's input from the good rows' columns, and what of the model is left to apply to it (None: all of
    it). A pipeline's leading standard scalers are applied while the columns are copied in (fast_paths.fill_scaled:
    the same floats), sparing a copy of the matrix and two passes over it."""
    every = bool(good.all())
    picked = {f["name"]: columns[f["name"]] if every else columns[f["name"]][good] for f in features}
    if loaded.needs_frame:
        return pd.DataFrame(picked), None
    scalers, rest = fast_paths.leading_scalers(loaded.estimator)
    rows, width = int(good.sum()), len(features)
    column_major = _column_major(rest)
    matrix = np.empty((width, rows) if column_major else (rows, width), dtype=float)
    for j, feature in enumerate(features):
        fast_paths.fill_scaled(matrix[j] if column_major else matrix[:, j], picked[feature["name"]], scalers, j)
    return (matrix.T if column_major else matrix), (rest if scalers else None)


def _all_finite(columns: dict[str, np.ndarray], features: list[dict], good: np.ndarray) -> bool:
    """Whether the good rows hold finite numbers only. The signature refused every other non-finite value, so only a
    nullable numeric feature's missing values can be left."""
    for feature in features:
        if feature.get("nullable") and feature["dtype"] in ("float", "int"):
            values = columns[feature["name"]]
            if values.dtype.kind != "f" or np.isnan(values[good]).any():
                return False
    return True


def _predict(loaded: Any, X: Any, rest: Any, finite: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's predictions and probabilities. A matrix with nothing but finite numbers (the usual case: the
    signature refused the rest) skips scikit-learn's own finiteness checks, one pass per step of a pipeline; a
    nullable feature's missing values keep them, so a model that cannot take NaN still says so."""
    with sklearn.config_context(assume_finite=finite and isinstance(X, np.ndarray)):
        return loaded.predict_arrays(X, rest=rest)


def _commit_chunk(chunk: BatchChunk, *, scored: int, rejected: int, seconds: float,
                  claim_next: bool = False) -> BatchChunk | None:  # fmt: skip
    """Count the chunk done (and finish or fail the job when it decides that); with `claim_next`, the job's next
    chunk, claimed in the same transaction."""
    with transaction.atomic():
        updated = BatchChunk.objects.filter(pk=chunk.pk, attempt=chunk.attempt, status=ChunkStatus.RUNNING).update(
            status=ChunkStatus.DONE, rows_scored=scored, rows_rejected=rejected, part=_part_name(chunk.index),
            seconds=seconds, finished_at=timezone.now(),
        )  # fmt: skip
        if not updated:
            logger.warning("%s: lost its lease before committing; the newer claim counts", chunk)
            return _claim(chunk.job_id) if claim_next else None
        # The UPDATE takes the job's row lock (held to the commit): the counts, and the decision to finish, are
        # one chunk's at a time.
        counts = BatchJob.objects.filter(pk=chunk.job_id)
        counts.update(rows_done=F("rows_done") + scored + rejected, rows_rejected=F("rows_rejected") + rejected,
                      chunks_done=F("chunks_done") + 1)  # fmt: skip
        status, rows_rejected, share, rows_total, chunks_done, chunks_total = counts.values_list(
            "status", "rows_rejected", "max_reject_share", "rows_total", "chunks_done", "chunks_total"
        ).get()
        if status != JobStatus.RUNNING:
            return None
        if rows_rejected > share * (rows_total or 0):
            _stop(BatchJob.objects.select_related("model", "version").get(pk=chunk.job_id), JobStatus.FAILED,
                  f"{rows_rejected} rows rejected: more than the allowed share {share:g} of {rows_total}")  # fmt: skip
            return None
        if chunks_done >= chunks_total:
            _finish(BatchJob.objects.select_related("model", "version").get(pk=chunk.job_id))
            return None
        return _claim(chunk.job_id) if claim_next else None


def _finish(job: BatchJob) -> None:
    """Inside the job's row lock, every chunk done: rejects.csv, then the manifest (last), then SUCCEEDED."""
    output = batch_io.locate(job.output_uri, writing=True)
    chunks = list(job.chunks.order_by("index"))
    rejected = [c for c in chunks if c.rows_rejected]
    rejects = io.BytesIO()
    rejects.write((",".join(REJECT_COLUMNS) + "\n").encode())
    for chunk in rejected:
        data = batch_io.read_bytes(output.child(f"_rejects/{chunk.index:05d}.csv")) or b""
        rejects.write(data.split(b"\n", 1)[1] if b"\n" in data else b"")
    batch_io.write_bytes(output.child("rejects.csv"), rejects.getvalue())
    job.finished_at = timezone.now()
    manifest = {
        "job": job.pk, "model": job.model.name, "version": job.version.version, "version_ref": job.version_ref,
        "input": job.input_uri, "rows": job.rows_done, "rows_scored": job.rows_done - job.rows_rejected,
        "rows_rejected": job.rows_rejected, "rejects": "rejects.csv",
        "parts": [{"path": c.part, "rows": c.rows_scored, "first_row": c.source["first_row"], "file": c.source["uri"]}
                  for c in chunks],
        "finished_at": job.finished_at.isoformat(),
    }  # fmt: skip
    batch_io.write_bytes(output.child("_manifest.json"), json.dumps(manifest, indent=1).encode())
    job.status = JobStatus.SUCCEEDED
    job.save(update_fields=["status", "finished_at"])
    _record_summary(job)


def _record_summary(job: BatchJob) -> None:
    progress = job.progress()
    summary = {"job": job.pk, "status": job.status, "rows": job.rows_done, "rows_rejected": job.rows_rejected,
               "seconds": progress["elapsed_seconds"], "version": job.version.version, "output": job.output_uri,
               "error": job.error}  # fmt: skip
    message = (f"batch job {job.pk} {job.status}: {job.rows_done} rows, {job.rows_rejected} rejected, "
               f"{progress['elapsed_seconds']:.1f} s, v{job.version.version} -> {job.output_uri}")  # fmt: skip
    registry.registry_event_record(model=job.model, action="batch.finished", version=job.version, after=summary,
                                   message=message + (f" ({job.error})" if job.error else ""))  # fmt: skip


# --- Watchdog and schedules --------------------------------------------------------------------------------------


def batch_watchdog() -> int:
    """Queue runners for running jobs with claimable chunks (their workers died); how many jobs."""
    now = timezone.now()
    claimable = Q(status=ChunkStatus.PENDING) | Q(status=ChunkStatus.RUNNING, lease_until__lt=now)
    kicked = 0
    for job in BatchJob.objects.filter(status=JobStatus.RUNNING):
        count = job.chunks.filter(claimable).count()
        if count:
            with transaction.atomic():
                _queue_runners(job, min(job.parallelism, count))
            kicked += 1
    return kicked


def batch_schedules_run_due(*, now: Any = None) -> int:
    """Start a job for each enabled schedule whose cron fired since its last job; how many started.

    Each schedule is claimed by a conditional UPDATE on last_fired_at, so two ticks never start the same job twice.
    """
    now = now or timezone.now()
    started = 0
    for schedule in BatchSchedule.objects.filter(enabled=True).select_related("model"):
        if cron_problem(schedule.cron):
            continue
        fired = last_cron_time(cron_schedule(schedule.cron), now)
        if fired is None or (schedule.last_fired_at is not None and fired <= schedule.last_fired_at):
            continue
        claimed = BatchSchedule.objects.filter(pk=schedule.pk, last_fired_at=schedule.last_fired_at)
        if not claimed.update(last_fired_at=fired):
            continue  # another tick got there first
        try:
            batch_job_create(
                model=schedule.model, version_ref=schedule.version_ref or None, input_format=schedule.input_format,
                input_uri=fired.strftime(schedule.input_pattern), output_uri=fired.strftime(schedule.output_pattern),
                passthrough=schedule.passthrough, schedule=schedule,
            )  # fmt: skip
            started += 1
        except ValidationError as exc:
            logger.error("batch schedule %s at %s could not start: %s", schedule.name, fired, exc.message_dict)
    return started


def cron_problem(cron: str) -> str | None:
    """Why a cron spec (five fields, UTC) cannot be used, or None."""
    if len(cron.split()) != 5:
        return "five fields: minute hour day-of-month month day-of-week (UTC), e.g. '0 3 * * *'"
    try:
        cron_schedule(cron)
    except (ValueError, TypeError) as exc:
        return f"not a cron spec: {exc}"
    return None


def cron_schedule(cron: str) -> Any:
    """A five-field cron spec as Celery's crontab (whose arguments are in another order)."""
    from celery.schedules import crontab

    minute, hour, day_of_month, month, day_of_week = cron.split()
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month, day_of_week=day_of_week)


def last_cron_time(schedule: Any, now: Any) -> Any:
    """The latest time at or before `now` (to the minute) that the crontab names, within the last 31 days."""
    minute = now.replace(second=0, microsecond=0)
    for _ in range(31 * 24 * 60):
        if (minute.minute in schedule.minute and minute.hour in schedule.hour
                and minute.day in schedule.day_of_month and minute.month in schedule.month_of_year
                and minute.isoweekday() % 7 in schedule.day_of_week):  # fmt: skip
            return minute
        minute -= timedelta(minutes=1)
    return None


# --- Validation, vectorised --------------------------------------------------------------------------------------


class CheckedColumns(NamedTuple):
    columns: dict[str, np.ndarray]  # each feature's values as the model takes them
    fields: np.ndarray  # per row: the field of its first problem, or None
    reasons: np.ndarray  # per row: that problem's reason, or None
    good: np.ndarray  # per row: no problem at all


def checked_columns(
    data: pd.DataFrame | pa.Table, features: list[dict[str, Any]], float_limit: float
) -> CheckedColumns:
    """Each feature's column as the model takes it, and per row its first problem's field and reason (None: fine).

    The same rules as a request's rows (serving/validation.py), applied to whole columns at once: boolean masks, so a
    clean chunk costs a few vector operations per feature and no per-row Python. `data` is a DataFrame (CSV: strings)
    or an Arrow table (Parquet), whose numeric columns are checked as arrays without going through pandas. The
    per-row fields and reasons are only filled in once a row has a problem (for a clean chunk they are a read-only
    view of None: filling two object arrays and finding the Nones again cost 2 ms per 100,000 rows).
    """
    fields = reasons = None
    flagged = np.zeros(len(data), dtype=bool)
    columns: dict[str, np.ndarray] = {}
    for feature in features:
        raw = data[feature["name"]]
        values, problems = _checked(raw if isinstance(raw, pa.ChunkedArray) else raw.reset_index(drop=True),
                                    feature, float_limit)  # fmt: skip
        columns[feature["name"]] = values
        for mask, reason in problems:
            if not mask.any():
                continue
            fresh = mask & ~flagged
            if fresh.any():
                if fields is None:
                    fields, reasons = np.full(len(data), None, dtype=object), np.full(len(data), None, dtype=object)
                fields[fresh] = feature["name"]
                reasons[fresh] = reason if isinstance(reason, str) else [reason(i) for i in np.flatnonzero(fresh)]
                flagged |= fresh
    if fields is None:
        fields = reasons = np.broadcast_to(np.array(None, dtype=object), (len(data),))
    return CheckedColumns(columns, fields, reasons, ~flagged)


def _checked(
    raw: pd.Series | pa.ChunkedArray, feature: dict[str, Any], float_limit: float
) -> tuple[np.ndarray, list[tuple[Any, Any]]]:
    """The column's values and its problems: (row mask, reason), in the order a request's check reports them; a
    reason is a string, or a function of the row for reasons that quote the value."""
    dtype, nullable = feature["dtype"], bool(feature.get("nullable"))
    if isinstance(raw, pa.ChunkedArray):
        if dtype in ("float", "int") and (pa.types.is_floating(raw.type) or pa.types.is_integer(raw.type)):
            return _checked_numbers(raw.to_numpy().astype(float, copy=False), feature, float_limit)
        raw = raw.to_pandas()
    problems: list[tuple[Any, Any]] = []
    text = not (pd.api.types.is_numeric_dtype(raw.dtype) or pd.api.types.is_bool_dtype(raw.dtype))
    missing = (raw.isna() | (raw == "")).to_numpy(dtype=bool) if text else raw.isna().to_numpy(dtype=bool)
    if dtype in ("float", "int"):
        numbers = pd.to_numeric(raw.where(~missing), errors="coerce") if text else raw
        values = numbers.to_numpy(dtype=float, na_value=np.nan)
        finite = np.isfinite(values)
        if not finite.all():
            unreadable = np.isnan(values) & ~missing
            problems.append((unreadable, lambda i: f"must be a number, got {str(raw.iat[i])[:40]!r}"))
            problems.append((~missing & ~finite & ~unreadable, "must be finite (not NaN or infinity)"))
        if dtype == "float":
            if float_limit < FLOAT64_MAX:  # every finite float64 fits a float64 model: no pass needed
                too_big = np.abs(values) > float_limit
                problems.append((too_big, f"is outside what this model can take (at most {float_limit:.8g})"))
        else:
            problems.append((finite & (np.mod(values, 1, where=finite, out=np.zeros_like(values)) != 0),
                             "must be an integer"))  # fmt: skip
    elif dtype == "bool":
        spelled = raw.astype(str).str.lower().map({"true": True, "false": False, "1": True, "0": False})
        problems.append((spelled.isna().to_numpy(dtype=bool) & ~missing, "must be true or false"))
        values = spelled.to_numpy(dtype=object)
    else:  # category: strings (or integers) as given
        values = raw.to_numpy(dtype=object)
    if not nullable and missing.any():
        problems.append((missing, "is required (not nullable)"))
    if dtype in ("float", "int"):
        with np.errstate(invalid="ignore"):
            if "min" in feature:
                problems.append((values < feature["min"], f"is below the minimum {feature['min']}"))
            if "max" in feature:
                problems.append((values > feature["max"], f"is above the maximum {feature['max']}"))
    if feature.get("allowed") is not None:
        allowed = {str(a) for a in feature["allowed"]}
        outside = ~pd.Series(values).astype(str).isin(allowed).to_numpy(dtype=bool) & ~missing
        problems.append((outside, "is not one of the allowed values"))
    return values, problems


def _checked_numbers(
    values: np.ndarray, feature: dict[str, Any], float_limit: float
) -> tuple[np.ndarray, list[tuple[Any, Any]]]:
    """_checked for a numeric Arrow column (nulls already NaN, as pandas reads them): the same problems in the same
    order, and no mask at all for a rule every value passes."""
    if feature["dtype"] == "float" and feature.get("allowed") is None and len(values):
        # The usual chunk, in two reductions: every value finite (a NaN or an infinity makes the minimum or the
        # maximum not finite) and within the bounds and the model's float limit.
        low, high = float(values.min()), float(values.max())
        if (math.isfinite(low) and math.isfinite(high) and low >= feature.get("min", -math.inf)
                and high <= feature.get("max", math.inf) and max(-low, high) <= float_limit):  # fmt: skip
            return values, []
    problems: list[tuple[Any, Any]] = []
    finite = np.isfinite(values)
    missing = None
    if not finite.all():
        missing = np.isnan(values)  # null or NaN: missing, as pandas' isna says
        problems.append((~missing & ~finite, "must be finite (not NaN or infinity)"))
    if feature["dtype"] == "float":
        if float_limit < FLOAT64_MAX:
            too_big = np.abs(values) > float_limit
            problems.append((too_big, f"is outside what this model can take (at most {float_limit:.8g})"))
    else:
        problems.append((finite & (np.mod(values, 1, where=finite, out=np.zeros_like(values)) != 0),
                         "must be an integer"))  # fmt: skip
    if missing is not None and not feature.get("nullable") and missing.any():
        problems.append((missing, "is required (not nullable)"))
    with np.errstate(invalid="ignore"):
        if "min" in feature:
            problems.append((values < feature["min"], f"is below the minimum {feature['min']}"))
        if "max" in feature:
            problems.append((values > feature["max"], f"is above the maximum {feature['max']}"))
    if feature.get("allowed") is not None:
        allowed = {str(a) for a in feature["allowed"]}
        outside = ~pd.Series(values).astype(str).isin(allowed).to_numpy(dtype=bool)
        if missing is not None:
            outside &= ~missing
        problems.append((outside, "is not one of the allowed values"))
    return values, problems
