"""Batch scoring benchmark: jobs over a Parquet file on 1 and 2 Celery worker processes, against the in-process floor.

How it measures
- Runs against real Postgres and Redis: DATABASE_URL and REDIS_URL must be set (a database and Redis db of your
  own; migrations are applied first). The two demo models (seed_demo's logistic regression and 100-tree forest,
  trained the same way) are registered once as bench-batch-logreg and bench-batch-forest and reused afterwards.
- Input: --rows rows (default 1,000,000) sampled with replacement from the bundled breast-cancer features, with an id
  column, written to one Parquet file in row groups of --chunk-rows (default 100,000) under bench/.work/batch/.
- Floor: the same rows, the same fitted estimator, `predict_proba` in this process on the whole matrix (the median of
  3 calls, measured just before each job, then half a second for its BLAS threads to stop spinning; the floor quoted
  is the median of those). That is the fastest this machine scores them with one process (and its BLAS threads), with
  no I/O at all.
- Jobs: `celery worker --pool solo` processes (1, then 2) on a queue of this run, each job created through the
  service as the API does; rows/s is rows / (finished_at - created_at) of the job: planning, queueing, reading,
  validating, scoring and writing the parts and the manifest. Median of --repeats jobs per model and worker count.
- Targets (issue 17): with 2 workers, at least 0.8x the single-process floor for the forest and 0.5x for the
  logistic regression; 1 -> 2 workers scales linearly within 25% (2-worker rate >= 1.5x the 1-worker rate).
- --peak-rss-rows N (e.g. 10000000): also one job over an N-row file on one worker, and the worker's peak RSS
  (VmHWM) for it against the same worker's peak for the --rows file: memory per worker follows the chunk, not the file.
The machine is shared: the load average is printed before and after, and every figure comes from the same run.
Results: stdout and bench/results/batch-<UTC timestamp>.json. Exit status 1 when a target fails.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<yours> REDIS_URL=redis://127.0.0.1:6379/<n> \\
        .venv/bin/python bench/batch.py [--rows 1000000] [--peak-rss-rows 10000000]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work" / "batch"
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))


def _setup_django(queue: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # DEBUG off, as deployed: Django's debug cursor alone added about a third to each chunk's database work. The
    # workers inherit this environment, so they get this run's throwaway key.
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ["MODELWORKS_BATCH_QUEUE"] = queue
    os.environ["MODELWORKS_BATCH_LOCAL_ROOTS"] = str(WORK)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _models() -> dict[str, object]:
    """name -> RegisteredModel, registered once from seed_demo's recipes (the same estimators and split)."""
    import skops.io as sio

    from registry import services
    from registry.management.commands.seed_demo import DEMO_MODELS, _split
    from registry.models import RegisteredModel

    found = {}
    for demo in DEMO_MODELS[:2]:
        name = "bench-batch-" + demo.name.rsplit("-", 1)[1]
        model = RegisteredModel.objects.filter(name=name).first()
        if model is None or not model.versions.exists():
            model = model or services.registered_model_create(name=name, task=demo.task)
            X_train, _, y_train, _ = _split(demo.dataset)
            version = services.model_version_register(
                model=model, artifact=sio.dumps(demo.build().fit(X_train, y_train))
            )
            services.alias_set(model=model, name="production", version=version)
        found[name] = model
    return found


def _write_input(path: Path, rows: int, chunk_rows: int) -> None:
    """`rows` sampled breast-cancer rows, written a row group at a time (a 10M-row file never sits in memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn import datasets

    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return
    data = datasets.load_breast_cancer(as_frame=True).data
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    for start in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - start)
        picked = data.iloc[rng.integers(0, len(data), n)].reset_index(drop=True)
        picked.insert(0, "id", np.arange(start, start + n))
        table = pa.Table.from_pandas(picked, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=chunk_rows)
    writer.close()


_FLOOR_INPUTS: dict[str, tuple] = {}


def _floor(model, path: Path, repeats: int) -> float:
    """Rows/s of the estimator's own predict_proba on the whole matrix, in this process (median of `repeats`)."""
    import pyarrow.parquet as pq

    from registry.selectors import production_version
    from registry.services import model_version_load

    if model.name not in _FLOOR_INPUTS:
        version = production_version(model)
        features = [f["name"] for f in version.signature["inputs"]]
        X = pq.read_table(path, columns=features).to_pandas().to_numpy(dtype=float)
        _FLOOR_INPUTS[model.name] = (model_version_load(version), X)
    estimator, X = _FLOOR_INPUTS[model.name]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        estimator.predict_proba(X)
        times.append(time.perf_counter() - started)
    return len(X) / statistics.median(times)


def _start_workers(count: int, queue: str) -> list[subprocess.Popen]:
    env = {**os.environ, "MODELWORKS_BATCH_QUEUE": queue, "MODELWORKS_BATCH_LOCAL_ROOTS": str(WORK)}
    workers = []
    for i in range(count):
        log = (WORK / f"worker-{i}.log").open("w")
        workers.append(subprocess.Popen(  # noqa: S603 - fixed argv built here, no shell
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-Q", queue, "-n",
             f"bench{i}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
    time.sleep(2)
    _ping(count)
    return workers


def _ping(count: int, timeout: float = 120) -> None:
    from config.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answers = app.control.ping(timeout=1.0) or []
        if sum(1 for a in answers for name in a if name.startswith("bench")) >= count:
            return
    raise SystemExit(f"{count} bench workers did not answer within {timeout:.0f}s (see {WORK}/worker-*.log)")


def _peak_rss_mb(process: subprocess.Popen) -> float:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stop(workers: list[subprocess.Popen]) -> None:
    for process in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _job(model, path: Path, chunk_rows: int, parallelism: int) -> float:
    """Rows/s of one job from its creation to its manifest."""
    from serving import batch
    from serving.batch_models import JobStatus

    output = WORK / "out" / uuid.uuid4().hex
    job = batch.batch_job_create(model=model, input_uri=str(path), output_uri=str(output), chunk_rows=chunk_rows,
                                 parallelism=parallelism, passthrough=["id"])  # fmt: skip
    while True:
        job.refresh_from_db()
        if job.status in JobStatus.finished():
            break
        time.sleep(0.05)
    if job.status != JobStatus.SUCCEEDED:
        raise SystemExit(f"bench job {job.pk} {job.status}: {job.error}")
    shutil.rmtree(output, ignore_errors=True)
    return job.rows_done / (job.finished_at - job.created_at).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-rss-rows", type=int, default=0, help="also measure peak RSS on a file this long")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        print("set DATABASE_URL (Postgres) and REDIS_URL: the benchmark runs real workers", file=sys.stderr)
        return 2
    queue = f"bench-batch-{uuid.uuid4().hex[:8]}"
    WORK.mkdir(parents=True, exist_ok=True)
    _setup_django(queue)
    load_before = os.getloadavg()
    models = _models()
    path = WORK / f"input-{args.rows}.parquet"
    _write_input(path, args.rows, args.chunk_rows)
    results: dict = {"rows": args.rows, "chunk_rows": args.chunk_rows, "repeats": args.repeats, "models": {}}
    floors: dict[str, list[float]] = {name: [] for name in models}
    workers: list[subprocess.Popen] = []
    try:
        for count in (1, 2):
            workers = _start_workers(count, queue)
            for name, model in models.items():
                rates = []
                for _ in range(args.repeats):  # the floor just before each job: both see the same machine
                    floors[name].append(_floor(model, path, 3))
                    time.sleep(0.5)  # the floor's BLAS threads spin on after their call: one worker lost a core
                    rates.append(_job(model, path, args.chunk_rows, parallelism=2 * count))
                results["models"].setdefault(name, {})[f"workers_{count}_rows_per_s"] = statistics.median(rates)
                results["models"][name][f"workers_{count}_all_rows_per_s"] = rates
            if count == 1:
                results["peak_rss_mb_1_worker"] = _peak_rss_mb(workers[0])
            _stop(workers)
        if args.peak_rss_rows:
            big = WORK / f"input-{args.peak_rss_rows}.parquet"
            _write_input(big, args.peak_rss_rows, args.chunk_rows)
            results["peak_rss"] = {"input_mb": big.stat().st_size / 2**20, "rows": args.peak_rss_rows}
            for label, file in (("small", path), ("big", big)):  # a fresh worker each, the same model
                workers = _start_workers(1, queue)
                rate = _job(models["bench-batch-logreg"], file, args.chunk_rows, parallelism=1)
                results["peak_rss"][f"{label}_peak_rss_mb"] = _peak_rss_mb(workers[0])
                results["peak_rss"][f"{label}_rows_per_s"] = rate
                _stop(workers)
    finally:
        _stop(workers)
    for name, measured in floors.items():
        results["models"][name]["floor_rows_per_s"] = statistics.median(measured)
        results["models"][name]["floor_all_rows_per_s"] = measured
    results["load_average"] = {"before": load_before, "after": os.getloadavg()}
    failed = _report(results)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"batch-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out.relative_to(REPO)}")
    return 1 if failed else 0


TARGETS = {"bench-batch-forest": 0.8, "bench-batch-logreg": 0.5}


def _report(results: dict) -> list[str]:
    print(f"batch scoring, {results['rows']:,} rows, chunks of {results['chunk_rows']:,}, medians of "
          f"{results['repeats']}; load average before {results['load_average']['before'][0]:.1f}, "
          f"after {results['load_average']['after'][0]:.1f}")  # fmt: skip
    print(f"{'model':22} {'floor rows/s':>14} {'1 worker':>12} {'2 workers':>12} {'2w/floor':>9} {'2w/1w':>7}"
          f"  {'2 workers, every job':>24}")  # fmt: skip
    failed = []
    for name, figures in results["models"].items():
        floor, one, two = figures["floor_rows_per_s"], figures["workers_1_rows_per_s"], figures["workers_2_rows_per_s"]
        figures["ratio_2_workers_to_floor"], figures["scaling_1_to_2"] = two / floor, two / one
        every = figures["workers_2_all_rows_per_s"]
        spread = f"{min(every):,.0f}-{max(every):,.0f}"
        print(f"{name:22} {floor:14,.0f} {one:12,.0f} {two:12,.0f} {two / floor:9.2f} {two / one:7.2f}  {spread:>24}")
        if two / floor < TARGETS[name]:
            failed.append(f"{name}: 2 workers at {two / floor:.2f}x the floor, target {TARGETS[name]}x")
        if two / one < 1.5:
            failed.append(f"{name}: 1 -> 2 workers scaled {two / one:.2f}x, target >= 1.5x (linear within 25%)")
    print(f"peak RSS of one worker ({results['rows']:,}-row file): {results['peak_rss_mb_1_worker']:.0f} MB")
    if "peak_rss" in results:
        big = results["peak_rss"]
        print(f"peak RSS of one fresh worker, logistic regression: {big['small_peak_rss_mb']:.0f} MB for the "
              f"{results['rows']:,}-row file, {big['big_peak_rss_mb']:.0f} MB for the {big['rows']:,}-row file "
              f"({big['input_mb']:.0f} MB of Parquet, {big['big_rows_per_s']:,.0f} rows/s)")  # fmt: skip
    for line in failed:
        print(f"TARGET MISSED: {line}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
