"""The `modelworks` CLI against a live server: exit codes a CI job can act on, and JSON output."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import skops.io as sio

from modelworks_client import Client
from modelworks_client import cli as modelworks_cli
from registry import services as registry
from rollouts import services as rollouts
from serving import routing, services
from serving.prediction_log import prediction_log
from tests.client.conftest import fit_pipeline

pytestmark = pytest.mark.django_db(transaction=True)
FAST = ["--stages", "100", "--stage-seconds", "1", "--analysis", "min_requests=20",
        "--analysis", "p99_min_delta_ms=1000", "--poll", "0.2"]  # fmt: skip


@pytest.fixture
def modelworks(live_server, token, capsys):
    """Run `modelworks ...` in this process: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = modelworks_cli.main(["--url", live_server.url, "--token", token, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_register_exits_3_when_rejected_and_0_with_json_when_accepted(modelworks, cancer_data, tmp_path):
    artifact = tmp_path / "model.skops"
    artifact.write_bytes(sio.dumps(fit_pipeline(cancer_data)))
    evaluation = tmp_path / "eval.csv"
    cancer_data.test.to_csv(evaluation, index=False)
    register = ["register", "cancer", str(artifact), "--eval-data", str(evaluation), "--target", "y"]

    code, out, err = modelworks(*register, "--gate", "accuracy >= 0.999")
    assert code == 3
    assert err.startswith("error: cancer v1 was rejected by its quality gates: accuracy >= 0.999 (accuracy = 0.9")
    assert "FAIL  accuracy >= 0.999" in out

    code, out, err = modelworks(
        "--json", *register, "--gate", "accuracy >= 0.9", "--alias", "production", "--tag", "ci=1"
    )
    assert (code, err) == (0, "")
    version = json.loads(out)
    assert (version["version"], version["status"], version["aliases"]) == (2, "production", ["production"])
    assert version["tags"] == {"ci": "1"} and version["gate_report"]["outcome"] == "validated"

    code, out, _ = modelworks("download", "models:/cancer@production", "-o", str(tmp_path / "got.skops"))
    assert code == 0 and (tmp_path / "got.skops").read_bytes() == artifact.read_bytes()
    assert "verified" in out
    rows = tmp_path / "rows.json"
    rows.write_text(cancer_data.X_test.head(2).to_json(orient="records"))
    code, out, _ = modelworks("--json", "predict", "cancer", str(rows), "--key", "k1")
    answer = json.loads(out)
    assert code == 0 and answer["version"] == 2 and len(answer["rows"]) == 2
    assert set(answer["rows"][0]) == {"prediction", "proba_0", "proba_1"}
    code, out, _ = modelworks("versions", "cancer")
    assert code == 0 and out.splitlines()[0].startswith("cancer v2: production") and "v1: rejected" in out

    code, _, err = modelworks("alias", "cancer", "staging", "1")
    assert code == 1 and err == "error: 400 on POST /api/v1/models/cancer/aliases/: version: version 1 was " \
                                "rejected by its quality gates and cannot get traffic\n"  # fmt: skip
    code, _, err = modelworks("download", "cancer@production")
    assert code == 1 and err.startswith("error: 'cancer@production' is not a model reference")


def drive(cli_thread: threading.Thread, rows: list[dict], seconds: float = 30) -> None:
    """What beat and the callers do meanwhile: tick the rollouts, send traffic, write the prediction log."""
    deadline = time.monotonic() + seconds
    while cli_thread.is_alive() and time.monotonic() < deadline:
        rollouts.tick()
        routing.clear_cache()
        for row in rows:
            services.predict(model_name="cancer", payload={"instances": [row]}, routing_key=uuid.uuid4().hex)
        prediction_log().flush()
        time.sleep(0.2)
    cli_thread.join(5)


def run_in_thread(modelworks, *args: str) -> tuple[threading.Thread, dict]:
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(zip(("code", "out", "err"), modelworks(*args), strict=True)))
    thread.start()
    return thread, result


def test_rollout_wait_exits_0_when_promoted_and_5_when_it_times_out(modelworks, live_server, token, logreg):
    model = registry.registered_model_create(name="cancer", task="classification")
    v1 = registry.model_version_register(model=model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)
    registry.alias_create(model=model, name="production", version=v1)
    registry.model_version_register(model=model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)

    code, out, err = modelworks("rollout", "cancer", "models:/cancer/2", *FAST, "--wait", "--timeout", "0.3")
    assert code == 5 and "is still pending after 0.3 s" in err  # nobody ticked it
    Client(live_server.url, token=token).rollout_control(int(out.split()[1]), "abort")
    assert model.versions.get(version=2).status == "rolled_back"  # an aborted candidate is out of traffic
    registry.model_version_register(model=model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv)

    thread, result = run_in_thread(
        modelworks, "rollout", "cancer", "models:/cancer/3", *FAST, "--wait", "--timeout", "30"
    )
    drive(thread, [{k: float(v) for k, v in r.items()} for r in logreg.X_test.head(25).to_dict("records")])
    assert result["code"] == 0, result
    assert "promoted" in result["out"].splitlines()[-1]
    assert model.aliases.get(name="production").version.version == 3


def test_rollout_wait_exits_4_when_the_candidate_is_rolled_back(modelworks, logreg, forest):
    """v1 (a forest, which takes missing values) serves; v2 (a logistic regression, which cannot) fails every
    request with a missing value, so the first analysis rolls it back."""
    model = registry.registered_model_create(name="cancer", task="classification")
    signature = {"inputs": [{"name": c, "dtype": "float", "nullable": True} for c in logreg.X_test.columns]}
    v1 = registry.model_version_register(model=model, artifact=forest.artifact, signature=signature,
                                         evaluation_data=forest.eval_csv)  # fmt: skip
    registry.alias_create(model=model, name="production", version=v1)
    registry.model_version_register(model=model, artifact=logreg.artifact, signature=signature,
                                    evaluation_data=logreg.eval_csv)  # fmt: skip

    thread, result = run_in_thread(modelworks, "rollout", "cancer", "2", *FAST, "--wait", "--timeout", "30")
    rows = [
        {k: float(v) for k, v in r.items()} | {"mean radius": None} for r in logreg.X_test.head(25).to_dict("records")
    ]
    drive(thread, rows)
    assert result["code"] == 4, result
    assert result["err"].startswith("error: rollout ") and "rolled back: error rate 100.0% above" in result["err"]
    assert model.versions.get(version=2).status == "rolled_back"
