"""Start a batch scoring job and follow it with a progress bar (rows, rows/s, ETA) until it finishes.

The job runs on the batch queue's Celery workers like any other; --no-wait starts it and prints its id. Exits non-zero
with one line when the request is refused, the job fails or is cancelled; Ctrl-C stops following (the job goes on:
cancel it with --cancel ID).
"""

from __future__ import annotations

import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from registry import refs
from registry.cli import one_line
from serving import batch
from serving.batch_models import BatchJob, JobStatus


class Command(BaseCommand):
    help = "Score a CSV/Parquet file or prefix (local, artifacts:, s3://, az://) with a model version, in chunks."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "model", nargs="?", help="a model name or models:/<name>/<version> | models:/<name>@<alias>"
        )
        parser.add_argument("input", nargs="?", help="a path, artifacts:..., s3://bucket/key or az://container/path")
        parser.add_argument("output", nargs="?", help="where the Parquet parts, rejects.csv and _manifest.json go")
        parser.add_argument("--format", choices=["parquet", "csv"])
        parser.add_argument("--passthrough", action="append", default=[], help="a column to copy (repeatable)")
        parser.add_argument("--chunk-rows", type=int)
        parser.add_argument("--parallelism", type=int)
        parser.add_argument("--max-reject-share", type=float)
        parser.add_argument("--no-wait", action="store_true", help="start the job and print its id")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar, only the summary")
        parser.add_argument("--cancel", type=int, metavar="ID", help="cancel job ID instead")

    def handle(self, *args, **opts) -> None:
        if opts["cancel"] is not None:
            return self._cancel(opts["cancel"])
        if not (opts["model"] and opts["input"] and opts["output"]):
            raise CommandError("give MODEL INPUT OUTPUT (or --cancel ID)")
        try:
            model, ref = refs.model_named(opts["model"])
            job = batch.batch_job_create(
                model=model, input_uri=opts["input"], output_uri=opts["output"],
                version_ref=str(ref) if ref is not None else None, input_format=opts["format"],
                passthrough=opts["passthrough"], chunk_rows=opts["chunk_rows"], parallelism=opts["parallelism"],
                max_reject_share=opts["max_reject_share"],
            )  # fmt: skip
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        self.stderr.write(
            f"batch job {job.pk}: {job.model.name} v{job.version.version}, {job.input_uri} -> {job.output_uri}"
        )
        if opts["no_wait"]:
            self.stdout.write(str(job.pk))
            return None
        job = self._follow(job, quiet=opts["no_progress"])
        progress = job.progress()
        summary = (f"batch job {job.pk} {job.status}: {job.rows_done} rows ({job.rows_rejected} rejected) in "
                   f"{progress['elapsed_seconds']:.1f} s, {progress['rows_per_second']:.0f} rows/s")  # fmt: skip
        if job.status != JobStatus.SUCCEEDED:
            raise CommandError(f"{summary}: {job.error}")
        self.stdout.write(f"{summary} -> {job.manifest_uri}")
        return None

    def _follow(self, job: BatchJob, *, quiet: bool) -> BatchJob:
        with tqdm(total=None, unit="rows", unit_scale=True, disable=quiet, file=self.stderr._out) as bar:
            while True:
                job.refresh_from_db()
                if job.rows_total is not None and bar.total != job.rows_total:
                    bar.total = job.rows_total
                bar.update(job.rows_done - bar.n)
                if job.status in JobStatus.finished():
                    return job
                time.sleep(0.5)

    def _cancel(self, pk: int) -> None:
        job = BatchJob.objects.filter(pk=pk).first()
        if job is None:
            raise CommandError(f"no batch job {pk}")
        try:
            batch.batch_job_cancel(job=job)
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        self.stdout.write(f"batch job {pk} cancelled")
