"""The backup and restore drill: seed, predict, back up, restore into a fresh database and a fresh storage, and the
restored platform (a new process on them) holds the same registry, aliases, events, feature values, log and keys and
serves the same predictions. An altered artifact, in the backup or already in the target storage, is refused with
its version named before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from io import StringIO
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from features.definitions import definitions_apply
from features.models import FeatureView
from features.services import feature_values_push
from monitoring.services.references import reference_dataset_from_evaluation
from registry import services as registry
from serving import prediction_log, routing
from serving.keys import api_key_create
from tests.backup_state import predictions, state
from tests.conftest import stored_files
from tests.features.conftest import PATIENT, VITALS, ago

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent
FILE_STORAGE = "django.core.files.storage.FileSystemStorage"


@pytest.fixture
def seeded(classifier_model, logreg):
    """A production version with its evaluation and reference samples, feature values, an API key and five logged
    predictions: what a backup must carry."""
    routing.clear_cache()
    version = registry.model_version_register(
        model=classifier_model, artifact=logreg.artifact, evaluation_data=logreg.eval_csv
    )
    registry.alias_create(model=classifier_model, name="production", version=version)
    reference_dataset_from_evaluation(version=version)
    definitions_apply(entities=[PATIENT], views=[VITALS])
    feature_values_push(
        view=FeatureView.objects.get(name="vitals"),
        rows=[{"patient_id": n, "heart_rate": 60.0 + n, "steps": n * 100, "smoker": n % 2 == 0, "ward": f"w{n}",
               "event_timestamp": ago(minutes=n)} for n in range(1, 4)],
    )  # fmt: skip
    key = api_key_create(name="drill", scopes=["predict:cancer"])[1]
    rows = [{k: float(v) for k, v in row.items()} for row in logreg.X_test.head(5).to_dict(orient="records")]
    answer = predictions(Client(HTTP_HOST="localhost"), key, rows)
    prediction_log.prediction_log().flush()
    return key, rows, answer


@pytest.fixture
def fresh_database():
    """An empty Postgres database beside the test one. It is kept, emptied, between runs rather than dropped: DROP
    DATABASE forces a checkpoint, seconds on a busy server."""
    name = f"{connection.settings_dict['NAME']}_restored"
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    _empty(name)
    yield name
    _empty(name)


def _empty(database: str) -> None:
    with _on_database(database), connection.cursor() as cursor:
        cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


@contextmanager
def _on_database(database: str):
    db, original = connection.settings_dict, connection.settings_dict["NAME"]
    connection.close()
    db["NAME"] = database  # the connection settings are shared by every thread's connection
    try:
        yield
    finally:
        connection.close()
        db["NAME"] = original


@contextmanager
def restoring_onto(settings, database: str, artifacts: Path):
    """This process's database and artifacts storage pointed at the restore's target, as its command line sees them."""
    original = settings.STORAGES
    settings.STORAGES = {**original, "artifacts": {"BACKEND": FILE_STORAGE, "OPTIONS": {"location": str(artifacts)}}}
    try:
        with _on_database(database):
            yield
    finally:
        settings.STORAGES = original


def _tables() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        return cursor.fetchone()[0]


def _serve_restored(database: str, artifacts: Path, key: str, rows: list) -> dict:
    """A new process on the restored database and storage: its state, then its answers for `rows`."""
    db = connection.settings_dict
    redis.Redis.from_url(django_settings.REDIS_URL).flushdb()  # no answer may come from the original's cache
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{database}",
        "REDIS_URL": django_settings.REDIS_URL,
        "ARTIFACT_ROOT": str(artifacts),
        "DEBUG": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "tests.backup_state", key, json.dumps(rows)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_backup_restore_drill_and_altered_artifacts_refused_with_their_version_named(
    seeded, settings, tmp_path, artifact_root, fresh_database
):
    """One test, one seed and one backup: the database flush after a transactional test is the costly part."""
    key, rows, answered = seeded
    original = state()
    assert original["references"] and original["feature_values"] and len(original["prediction_log"]) == 1
    backup, out = tmp_path / "backup", StringIO()
    call_command("backup", str(backup), stdout=out)
    assert "and 3 files" in out.getvalue()  # the artifact, its evaluation sample and its reference sample
    artifact = registry.ModelVersion.objects.get().artifact_path
    pristine = (artifact_root / artifact).read_bytes()

    # Restoring onto a storage that survived (a replicated bucket) where the file was changed: refused, nothing done.
    survived = tmp_path / "survived"
    (survived / artifact).parent.mkdir(parents=True)
    (survived / artifact).write_bytes(pristine[:-1] + bytes([pristine[-1] ^ 1]))
    with restoring_onto(settings, fresh_database, survived):
        with pytest.raises(CommandError, match=r"^cancer v1: the target storage holds its artifact .* refusing"):
            call_command("restore", str(backup))
        assert _tables() == 0
    assert stored_files(survived) == [artifact]

    # The backup's own copy altered: refused before the database or the storage is touched.
    copy = backup / "files" / artifact
    copy.write_bytes(pristine + b"\0")
    restored_root = tmp_path / "restored-artifacts"
    with restoring_onto(settings, fresh_database, restored_root):
        with pytest.raises(CommandError, match=r"^cancer v1: the backup's copy of its artifact .* refusing to restore"):
            call_command("restore", str(backup))
        assert _tables() == 0 and stored_files(restored_root) == []

        # The drill itself, from the intact backup into the fresh database and storage; then never over it.
        copy.write_bytes(pristine)
        out = StringIO()
        call_command("restore", str(backup), stdout=out)
        assert "restore good" in out.getvalue() and "1 artifacts verified" in out.getvalue()
        with pytest.raises(CommandError, match=f"the database {fresh_database} is not empty"):
            call_command("restore", str(backup))
    assert stored_files(restored_root) == stored_files(artifact_root)

    restored = _serve_restored(fresh_database, restored_root, key, rows)
    assert restored["state"] == json.loads(json.dumps(original))
    assert restored["predictions"] == answered
    assert answered["cached"] == [False] * len(rows)  # both answered by their model, not a cache

    # Backing up a platform whose stored artifact was altered is refused too: no backup carries a bad model.
    (artifact_root / artifact).write_bytes(pristine + b"\0")
    with pytest.raises(CommandError, match=r"^cancer v1: the stored artifact has sha256 \w+, registered \w+"):
        call_command("backup", str(tmp_path / "second"))
    with pytest.raises(CommandError, match="holds no manifest.json"):
        call_command("restore", str(tmp_path / "second"))
