"""Batch scoring jobs (serving/batch.py) on real Postgres, Redis and real Celery worker processes: output equal to
scoring the whole input in process, rejects, cancel, a worker SIGKILLed mid-job, two workers sharing a job, and
S3 input and output against a local S3 server (moto in server mode)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.conf import settings
from django.db import connection
from moto.server import ThreadedMotoServer
from sklearn import datasets

from registry import services as registry
from registry.models import RegistryEvent
from serving import batch
from serving.batch_models import BatchJob, ChunkStatus, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
FEATURES = list(datasets.load_breast_cancer(as_frame=True).data.columns)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """The folder the test process and its workers share: artifacts, inputs, outputs."""
    return tmp_path_factory.mktemp("batch")


@pytest.fixture(autouse=True)
def artifact_root(settings, shared):
    """The workers load models from the artifacts storage: the same folder for every test of the module."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                      "OPTIONS": {"location": str(shared / "artifacts")}},
    }  # fmt: skip
    return shared / "artifacts"


@pytest.fixture(scope="module")
def s3():
    """A local S3 server (moto's server mode) on a free port, and a boto3 client for it (the test's own view)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    yield endpoint, client
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    server.stop()


@pytest.fixture(scope="module")
def queue() -> str:
    return f"batch-test-{uuid.uuid4().hex[:8]}"


def start_worker(shared: Path, queue: str, s3_endpoint: str, name: str, **env: str) -> subprocess.Popen:
    db = connection.settings_dict
    environment = {
        **os.environ, **S3_ENV, "DEBUG": "1", "REDIS_URL": settings.REDIS_URL,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "ARTIFACT_ROOT": str(shared / "artifacts"), "MODELWORKS_BATCH_LOCAL_ROOTS": str(shared),
        "MODELWORKS_BATCH_QUEUE": queue, "MODELWORKS_BATCH_S3_ENDPOINT_URL": s3_endpoint,
        "MODELWORKS_BATCH_S3_REGION": "us-east-1", **env,
    }  # fmt: skip
    log_path = shared / f"{name}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-Q", queue, "-n",
             f"{name}@%h", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
            cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while " ready." not in log_path.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # consuming: a job started now is seen by this worker
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


LEASE = {"MODELWORKS_BATCH_CHUNK_LEASE_S": "6"}  # a killed worker's chunk is claimed again after 6 s


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, shared, queue, s3):
    """The module's worker: {"process": ...}; the kill test SIGKILLs it and puts its restarted self in its place."""
    holder = {"process": start_worker(shared, queue, s3[0], "w1", **LEASE)}
    yield holder
    stop(holder["process"])


@pytest.fixture(autouse=True)
def batch_settings(settings, shared, queue, s3):
    settings.MODELWORKS_BATCH_QUEUE = queue
    settings.MODELWORKS_BATCH_LOCAL_ROOTS = [str(shared)]
    settings.MODELWORKS_BATCH_S3_ENDPOINT_URL = s3[0]
    settings.MODELWORKS_BATCH_S3_REGION = "us-east-1"


@pytest.fixture
def cancer(classifier_model, forest):
    """`cancer` v1 (the 10-tree forest) in production."""
    version = registry.model_version_register(
        model=classifier_model, artifact=forest.artifact, evaluation_data=forest.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=version)
    return classifier_model


def sample_rows(n: int, seed: int) -> pd.DataFrame:
    """`n` rows sampled from the bundled breast-cancer data, with an id column to pass through."""
    data = datasets.load_breast_cancer(as_frame=True).data
    rows = data.sample(n=n, replace=True, random_state=seed).reset_index(drop=True)
    return rows.assign(id=[f"r{seed}-{i}" for i in range(n)])


def write_parquet(path: Path, frame: pd.DataFrame, row_group: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group)


def wait_for(job: BatchJob, timeout: float = 30) -> BatchJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in JobStatus.finished():
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job.pk} still {job.status} after {timeout}s: {job.progress()} {job.error}")


def read_result(output: Path) -> tuple[dict, pd.DataFrame]:
    """The result as a reader sees it: the manifest, then the parts it lists, in order."""
    manifest = json.loads((output / "_manifest.json").read_text())
    parts = [pq.read_table(output / part["path"]).to_pandas() for part in manifest["parts"]]
    return manifest, pd.concat(parts, ignore_index=True)


def assert_scored_like_in_process(result: pd.DataFrame, expected_rows: pd.DataFrame, estimator) -> None:
    assert list(result["id"]) == list(expected_rows["id"])
    X = expected_rows[FEATURES]
    assert list(result["prediction"]) == list(estimator.predict(X))
    probabilities = result[[f"probability_{c}" for c in estimator.classes_]].to_numpy()
    np.testing.assert_allclose(probabilities, estimator.predict_proba(X), rtol=0, atol=1e-12)


def test_a_multi_chunk_parquet_job_over_a_prefix_equals_scoring_in_process(api, cancer, forest, shared, worker):
    first, second = sample_rows(300, 1), sample_rows(250, 2)
    write_parquet(shared / "in-a" / "day-1.parquet", first, row_group=100)
    write_parquet(shared / "in-a" / "day-2.parquet", second, row_group=100)
    answer = api.post("/api/v1/models/cancer/batch-jobs/", {
        "input": f"{shared}/in-a/", "output": f"{shared}/out-a/", "passthrough": ["id"], "chunk_rows": 200,
        "parallelism": 2,
    }, format="json")  # fmt: skip
    assert answer.status_code == 201, answer.json()
    assert answer["Location"] == f"/api/v1/batch-jobs/{answer.json()['id']}/"
    job = wait_for(BatchJob.objects.get(pk=answer.json()["id"]))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert (job.chunks_total, job.rows_total, job.rows_done, job.rows_rejected) == (4, 550, 550, 0)
    manifest, result = read_result(shared / "out-a")
    assert manifest["version"] == 1 and manifest["rows_scored"] == 550
    assert_scored_like_in_process(result, pd.concat([first, second], ignore_index=True), forest.estimator)
    detail = api.get(f"/api/v1/batch-jobs/{job.pk}/").json()
    assert detail["status"] == "succeeded" and detail["progress"]["rows_done"] == 550
    assert detail["progress"]["rows_per_second"] > 0 and detail["progress"]["eta_seconds"] is None
    listed = api.get("/api/v1/models/cancer/batch-jobs/?status=succeeded").json()
    assert [j["id"] for j in listed["results"]] == [job.pk]
    event = RegistryEvent.objects.get(model=cancer, action="batch.finished")
    assert event.after["rows"] == 550 and event.after["version"] == 1 and event.after["output"] == f"{shared}/out-a/"


def test_a_logistic_regression_job_equals_scoring_in_process(classifier_model, logreg, shared, worker):
    """The linear model's path (a column-major matrix, scikit-learn's finiteness checks skipped on finite input)
    answers what the estimator answers on the rows in one call."""
    version = registry.model_version_register(model=classifier_model, artifact=logreg.artifact,
                                              evaluation_data=logreg.eval_csv)  # fmt: skip
    registry.alias_create(model=classifier_model, name="production", version=version)
    rows = sample_rows(700, 9)
    write_parquet(shared / "in-lr" / "rows.parquet", rows, row_group=100)
    job = batch.batch_job_create(model=classifier_model, input_uri=f"{shared}/in-lr/rows.parquet",
                                 output_uri=f"{shared}/out-lr", passthrough=["id"], chunk_rows=300)  # fmt: skip
    job = wait_for(job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert (job.chunks_total, job.rows_done, job.rows_rejected) == (3, 700, 0)
    _, result = read_result(shared / "out-lr")
    assert_scored_like_in_process(result, rows, logreg.estimator)


def test_missing_values_of_a_nullable_feature_reach_the_model_which_says_it_cannot_take_them(
    classifier_model, logreg, shared, worker
):
    version = registry.model_version_register(model=classifier_model, artifact=logreg.artifact,
                                              evaluation_data=logreg.eval_csv)  # fmt: skip
    registry.alias_create(model=classifier_model, name="production", version=version)
    inputs = [dict(f, nullable=True) if f["name"] == "mean radius" else f for f in version.signature["inputs"]]
    version.signature = {**version.signature, "inputs": inputs}
    version.save(update_fields=["signature"])
    rows = sample_rows(50, 10)
    rows.loc[7, "mean radius"] = np.nan
    write_parquet(shared / "in-nan" / "rows.parquet", rows, row_group=50)
    job = wait_for(batch.batch_job_create(model=classifier_model, input_uri=f"{shared}/in-nan/rows.parquet",
                                          output_uri=f"{shared}/out-nan"))  # fmt: skip
    assert job.status == JobStatus.FAILED and "NaN" in job.error, job.error
    assert not (shared / "out-nan" / "_manifest.json").exists()


def test_bad_rows_of_a_csv_land_in_the_rejects_file_and_over_the_share_fail_the_job(
    api, cancer, forest, shared, worker
):
    rows = sample_rows(230, 3)
    text = rows[["id", *FEATURES]].astype(object)
    text.loc[5, "mean radius"] = "abc"
    text.loc[17, "worst area"] = ""
    text.loc[199, "mean texture"] = "inf"
    (shared / "in-b").mkdir()
    (shared / "in-b" / "rows.csv").write_text(text.to_csv(index=False))
    answer = api.post("/api/v1/models/cancer/batch-jobs/", {
        "input": f"{shared}/in-b/rows.csv", "output": f"{shared}/out-b", "passthrough": ["id"], "chunk_rows": 100,
        "max_reject_share": 0.05,
    }, format="json")  # fmt: skip
    assert answer.status_code == 201, answer.json()
    job = wait_for(BatchJob.objects.get(pk=answer.json()["id"]))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert (job.chunks_total, job.rows_done, job.rows_rejected) == (3, 230, 3)
    rejects = pd.read_csv(shared / "out-b" / "rejects.csv")
    assert rejects[["row", "field"]].values.tolist() == [[5, "mean radius"], [17, "worst area"],
                                                          [199, "mean texture"]]  # fmt: skip
    assert list(rejects["reason"]) == ["must be a number, got 'abc'", "is required (not nullable)",
                                       "must be finite (not NaN or infinity)"]  # fmt: skip
    _, result = read_result(shared / "out-b")
    kept = rows.drop(index=[5, 17, 199]).reset_index(drop=True)
    assert_scored_like_in_process(result, kept, forest.estimator)

    # the same file with a reject share of 1%: 3 of 230 is over it, so the job fails, and no manifest appears
    answer = api.post("/api/v1/models/cancer/batch-jobs/", {
        "input": f"{shared}/in-b/rows.csv", "output": f"{shared}/out-b2", "chunk_rows": 100, "max_reject_share": 0.01,
    }, format="json")  # fmt: skip
    job = wait_for(BatchJob.objects.get(pk=answer.json()["id"]))
    assert job.status == JobStatus.FAILED and job.error.startswith("3 rows rejected: more than the allowed share 0.01")
    assert not (shared / "out-b2" / "_manifest.json").exists()


@pytest.mark.django_db
def test_bad_requests_answer_400_on_the_field(api, cancer, shared):
    def post(**body):
        return api.post("/api/v1/models/cancer/batch-jobs/", body, format="json")

    assert "input" in post(input="/etc/passwd", output=f"{shared}/x").json()
    assert "input" in post(input=f"{shared}/nothing-here.parquet", output=f"{shared}/x").json()
    assert "output" in post(input=f"{shared}/in-a/", output="/tmp/elsewhere").json()
    assert "version" in post(input=f"{shared}/in-a/", output=f"{shared}/x", version=7).json()
    assert "input_format" in post(input=f"{shared}/in-a/", output=f"{shared}/x", input_format="xml").json()
    assert BatchJob.objects.count() == 0


def test_cancel_stops_the_remaining_chunks(api, cancer, shared, worker):
    write_parquet(shared / "in-d" / "rows.parquet", sample_rows(1200, 5), row_group=40)
    answer = api.post("/api/v1/models/cancer/batch-jobs/", {
        "input": f"{shared}/in-d/", "output": f"{shared}/out-d", "chunk_rows": 40, "parallelism": 1,
    }, format="json")  # fmt: skip
    job = BatchJob.objects.get(pk=answer.json()["id"])
    deadline = time.monotonic() + 20
    while job.chunks_done < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
        job.refresh_from_db()
    cancelled = api.post(f"/api/v1/batch-jobs/{job.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    deadline = time.monotonic() + 10
    while job.chunks.filter(status=ChunkStatus.RUNNING).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a runner queued before the cancel finds nothing to claim
    job.refresh_from_db()
    done = job.chunks.filter(status=ChunkStatus.DONE).count()
    assert job.status == JobStatus.CANCELLED and 2 <= done < 30
    assert job.chunks.filter(status=ChunkStatus.CANCELLED).count() == 30 - done
    assert sorted(p.name for p in (shared / "out-d").glob("part-*")) == [f"part-{i:05d}.parquet" for i in range(done)]
    assert not (shared / "out-d" / "_manifest.json").exists()
    assert api.post(f"/api/v1/batch-jobs/{job.pk}/cancel/").status_code == 400
    assert RegistryEvent.objects.get(model=cancer, action="batch.finished").after["status"] == "cancelled"


def test_a_worker_killed_mid_job_and_restarted_completes_it_without_duplicate_parts(
    cancer, forest, shared, queue, s3, worker, fault_row
):
    rows = sample_rows(800, 6)
    write_parquet(shared / "in-e" / "rows.parquet", rows, row_group=50)
    job = batch.batch_job_create(model=cancer, input_uri=f"{shared}/in-e/", output_uri=f"{shared}/out-e",
                                 passthrough=["id"], chunk_rows=50, parallelism=1)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.chunks_done >= 2 and job.chunks.filter(status=ChunkStatus.RUNNING).exists():
            break
        time.sleep(0.005)
    worker["process"].send_signal(signal.SIGKILL)  # mid-chunk: no warm shutdown, no ack, nothing committed
    worker["process"].wait()
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.chunks_done < 16
    orphaned = list(job.chunks.filter(status=ChunkStatus.RUNNING).values_list("index", flat=True))
    worker["process"] = start_worker(shared, queue, s3[0], "w1-restarted", **LEASE)
    restarted = time.monotonic()
    deadline = restarted + 40
    while job.status == JobStatus.RUNNING and time.monotonic() < deadline:
        batch.batch_watchdog()  # what beat runs every minute: runners for chunks nobody holds
        time.sleep(0.5)
        job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert (job.chunks_done, job.rows_done) == (16, 800)
    assert all(job.chunks.get(index=i).attempt >= 2 for i in orphaned)
    files = sorted(p.name for p in (shared / "out-e").iterdir())
    parts = [name for name in files if name.startswith("part-")]
    # issue 20's fault table: rows scored, chunk parts expected/found, seconds from the restart to the finished job
    fault_row("Celery worker SIGKILLed mid-batch job (chunk parts)", len(rows), 0, 16, len(parts),
              time.monotonic() - restarted)  # fmt: skip
    assert files == sorted([*(f"part-{i:05d}.parquet" for i in range(16)), "_manifest.json", "rejects.csv"])
    _, result = read_result(shared / "out-e")
    assert_scored_like_in_process(result, rows, forest.estimator)


def test_two_worker_processes_share_one_jobs_chunks(cancer, shared, queue, s3, worker):
    second = start_worker(shared, queue, s3[0], "second", **LEASE)
    try:
        write_parquet(shared / "in-f" / "rows.parquet", sample_rows(1200, 7), row_group=100)
        job = batch.batch_job_create(model=cancer, input_uri=f"{shared}/in-f/", output_uri=f"{shared}/out-f",
                                     chunk_rows=100, parallelism=2)  # fmt: skip
        job = wait_for(job)
    finally:
        stop(second)
    assert job.status == JobStatus.SUCCEEDED, job.error
    claimers = set(job.chunks.values_list("claimed_by", flat=True))
    assert len(claimers) == 2, claimers
    assert sorted(job.chunks.values_list("attempt", flat=True)) == [1] * 12


def test_s3_input_and_output_against_a_local_s3_server(api, cancer, forest, s3, worker):
    endpoint, client = s3
    for bucket in ("lake", "results"):
        client.create_bucket(Bucket=bucket)
    rows = sample_rows(260, 8)
    for name, part in (("a", rows.iloc[:130]), ("b", rows.iloc[130:])):
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), buffer, row_group_size=65)
        client.put_object(Bucket="lake", Key=f"scoring/2026-12-04/{name}.parquet", Body=buffer.getvalue())
    answer = api.post("/api/v1/models/cancer/batch-jobs/", {
        "input": "s3://lake/scoring/2026-12-04/", "output": "s3://results/cancer/2026-12-04/",
        "passthrough": ["id"], "chunk_rows": 65, "version": "models:/cancer@production",
    }, format="json")  # fmt: skip
    assert answer.status_code == 201, answer.json()
    job = wait_for(BatchJob.objects.get(pk=answer.json()["id"]))
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.chunks_total == 4
    body = client.get_object(Bucket="results", Key="cancer/2026-12-04/_manifest.json")["Body"].read()
    manifest = json.loads(body)
    parts = []
    for part in manifest["parts"]:
        data = client.get_object(Bucket="results", Key=f"cancer/2026-12-04/{part['path']}")["Body"].read()
        parts.append(pq.read_table(io.BytesIO(data)).to_pandas())
    assert_scored_like_in_process(pd.concat(parts, ignore_index=True), rows, forest.estimator)
    listed = client.list_objects_v2(Bucket="results", Prefix="cancer/2026-12-04/")["Contents"]
    assert len([o for o in listed if "/part-" in o["Key"]]) == 4
