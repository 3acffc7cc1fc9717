"""The client's batch jobs over real HTTP: `modelworks batch` starts one, the client follows and cancels it, and a
refusal is one line naming the field (no worker here: the jobs stay pending until cancelled)."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelworks_client import cli as modelworks_cli
from registry import services as registry

pytestmark = pytest.mark.django_db(transaction=True)


def test_batch_from_the_cli_then_cancel_and_wait_from_the_client(mw, live_server, token, logreg, settings, tmp_path,
                                                                 capsys):  # fmt: skip
    settings.MODELWORKS_BATCH_QUEUE = f"unconsumed-{uuid.uuid4().hex[:8]}"  # nothing runs it: it stays pending
    settings.MODELWORKS_BATCH_LOCAL_ROOTS = [str(tmp_path)]
    model = registry.registered_model_create(name="cancer", task="classification")
    registry.alias_create(model=model, name="production", version=registry.model_version_register(
        model=model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv))  # fmt: skip
    pq.write_table(pa.table({"id": [1]}), tmp_path / "rows.parquet")

    def run(*args: str) -> tuple[int, str, str]:
        code = modelworks_cli.main(["--url", live_server.url, "--token", token, *args])
        return code, *capsys.readouterr()

    code, out, _ = run("batch", "cancer", str(tmp_path / "rows.parquet"), str(tmp_path / "out"), "--passthrough", "id")
    assert code == 0, out
    job_id = int(out.split()[2])
    assert out.strip() == f"batch job {job_id} of cancer v1: pending, 0/? rows, 0 rejected"
    assert mw.batch_job_status(job_id)["passthrough"] == ["id"]
    assert mw.batch_job_cancel(job_id)["status"] == "cancelled"
    assert mw.wait_for_batch_job(job_id, timeout=5, poll=0.1)["status"] == "cancelled"
    code, _, err = run("batch", "cancer", "/etc/passwd", str(tmp_path / "out"))
    assert code == 1 and "input" in err and "outside the local batch roots" in err
