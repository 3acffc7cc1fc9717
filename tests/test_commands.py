"""Management commands: registration, the demo seed and the admin user, as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from registry import services as registry
from registry.models import ModelAlias, ModelVersion, RegisteredModel
from tests.serving.conftest import fresh_serving_state  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


def test_register_model_creates_the_model_and_points_the_alias(tmp_path, logreg, capsys):
    artifact, evaluation = tmp_path / "m.skops", tmp_path / "eval.csv"
    artifact.write_bytes(logreg.artifact)
    evaluation.write_bytes(logreg.eval_csv)
    call_command(
        "register_model", "cancer", str(artifact), "--task", "classification", "--eval-data", str(evaluation),
        "--gate", "accuracy >= 0.9", "--lineage", '{"source": "git:abc"}', "--alias", "production",
    )  # fmt: skip
    assert "cancer v1: validated" in capsys.readouterr().out
    version = ModelVersion.objects.get(model__name="cancer")
    assert version.status == "production" and version.lineage == {"source": "git:abc"}
    assert ModelAlias.objects.get(model__name="cancer", name="production").version == version


def test_register_model_refuses_bad_input_in_one_line(tmp_path, classifier_model):
    empty = tmp_path / "empty.skops"
    empty.write_bytes(b"")
    with pytest.raises(CommandError, match="^artifact: the file is empty$"):
        call_command("register_model", "cancer", str(empty))
    with pytest.raises(CommandError, match="give --task"):
        call_command("register_model", "unknown-model", str(empty))
    with pytest.raises(CommandError, match="--metrics: not valid JSON"):
        call_command("register_model", "cancer", str(empty), "--metrics", "{oops")
    assert not ModelVersion.objects.exists()


def test_register_model_exits_3_on_gate_rejection_and_keeps_the_rejected_version(tmp_path, logreg, capsys):
    artifact, evaluation = tmp_path / "m.skops", tmp_path / "eval.csv"
    artifact.write_bytes(logreg.artifact)
    evaluation.write_bytes(logreg.eval_csv)
    argv = ["register_model", "cancer", str(artifact), "--task", "classification", "--eval-data", str(evaluation)]
    argv += ["--gate", "accuracy >= 0.999", "--gate", "f1 >= 0.5", "--alias", "prod"]
    # manage.py prints a CommandError as one line on stderr and exits with its returncode (Django's run_from_argv;
    # run in-process it would close the test's database connection).
    with pytest.raises(CommandError) as rejected:
        call_command(*argv)
    assert rejected.value.returncode == 3
    message = str(rejected.value)
    assert "\n" not in message and "cancer v1 rejected by its quality gates: accuracy >= 0.999 (accuracy = " in message
    assert "f1 >= 0.5" not in message  # only the failed rules
    captured = capsys.readouterr()
    assert "cancer v1: rejected" in captured.out and "cancer@prod not moved" in captured.out
    version = ModelVersion.objects.get(model__name="cancer")
    assert version.status == "rejected" and not ModelAlias.objects.exists()
    # A validated registration still exits 0.
    registry.registered_model_update(model=version.model, gate_rules=["accuracy >= 0.9"])
    call_command("register_model", "cancer", str(artifact), "--eval-data", str(evaluation))
    assert "cancer v2: validated" in capsys.readouterr().out
    with pytest.raises(CommandError) as rejected:
        call_command("register_model", "cancer", str(artifact))  # no evaluation data: accuracy unknown
    assert rejected.value.returncode == 3 and "accuracy is not available" in str(rejected.value)


@pytest.mark.django_db(transaction=True)
def test_a_failing_command_exits_non_zero_with_one_readable_line(tmp_path):
    db = connection.settings_dict
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    result = subprocess.run(
        [sys.executable, "manage.py", "register_model", "cancer", str(tmp_path / "missing.skops")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot read" in lines[0] and "missing.skops" in lines[0]


@pytest.mark.usefixtures("fresh_serving_state")  # the demo's traffic is logged inside this test's transaction
def test_seed_demo_registers_real_models_through_the_services(capsys):
    call_command("seed_demo")
    models = {m.name: m for m in RegisteredModel.objects.all()}
    assert set(models) == {"breast-cancer-logreg", "breast-cancer-forest", "diabetes-ridge", "breast-cancer-by-patient"}
    for model in models.values():
        version = model.versions.get(version=1)  # the rollout and experiment demos add a v2 to two of them
        assert version.status == "production"
        assert version.gate_report["metrics_source"] == "computed"
        assert version.gate_report["outcome"] == "validated"
        assert model.events.filter(action="version.registered").exists()
    assert models["diabetes-ridge"].versions.get(version=1).gate_report["metrics"]["rmse"] < 65
    # The rollout demo: a retrained ridge model on its way to production.
    rollout = models["diabetes-ridge"].rollouts.get()
    assert (rollout.status, rollout.candidate.version, rollout.candidate.status) == ("pending", 2, "canary")
    call_command("seed_demo")
    assert ModelVersion.objects.count() == 6
    out = capsys.readouterr().out
    assert "already seeded" in out and "already has a rollout" in out


def test_ensure_admin_prints_a_generated_password_once(client, capsys, monkeypatch):
    monkeypatch.delenv("MODELWORKS_ADMIN_PASSWORD", raising=False)
    call_command("ensure_admin")
    out = capsys.readouterr().out
    password = out.split("password: ")[1].split()[0]
    assert client.login(username="admin", password=password)
    call_command("ensure_admin")
    assert "already exists" in capsys.readouterr().out
