"""Backup and restore of the whole platform: one consistent database dump plus every file the database points at in
the artifacts storage (model artifacts, evaluation samples, reference samples), with a manifest of sha256s.

It spans every app, so it lives here rather than in one of them; `registry/management/commands/{backup,restore}.py`
are its command lines (the lowest app, so the commands exist whatever else is installed).

Consistency: on PostgreSQL one REPEATABLE READ transaction exports its snapshot, lists the files from it, and pg_dump
dumps that same snapshot (`--snapshot`), so the file list is exactly the dump's. On SQLite (the embedded default) the
online backup API copies the database at one instant and the file list is read from the copy. Files are never
rewritten or deleted in place (a new artifact gets a new path, and is written before its row commits), so copying
them after the snapshot copies what the snapshot names.

A backup is complete when its manifest exists: the manifest is written last. Restore goes into an empty database
only, checks every file of the backup against the manifest and every file already in the target storage before it
touches anything, then checks every model artifact against the sha256 the restored registry holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.db import connection, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

MANIFEST = "manifest.json"
FORMAT = 1
FILES_PREFIX = "files/"
OBJECT_STORES = {"s3://": "storages.backends.s3.S3Storage", "azure://": "storages.backends.azure_storage.AzureStorage"}
DUMP_NAMES = {"postgresql": "database.pgdump", "sqlite": "database.sqlite3"}


class BackupError(Exception):
    """The backup or restore cannot go on; the message says why in one line."""


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the artifacts storage
    kind: str  # artifact, evaluation or reference
    version: str  # the model version it belongs to ("name vN")
    registered_sha256: str = ""  # artifacts: the sha256 the registry recorded at registration
    sha256: str = ""  # what the backup holds (filled in when copied)


def location(spec: str) -> Storage:
    """A directory, or an object-store prefix (`s3://bucket/prefix`, `azure://container/prefix`) reached with the
    same credentials settings as the artifacts storage."""
    for scheme, backend in OBJECT_STORES.items():
        if spec.startswith(scheme):
            bucket, _, prefix = spec.removeprefix(scheme).partition("/")
            if not bucket:
                raise BackupError(f"{spec}: name the bucket or container ({scheme}NAME/PREFIX)")
            artifacts = settings.STORAGES["artifacts"]  # its credentials settings, if it is the same kind of store
            options = dict(artifacts.get("OPTIONS", {})) if artifacts["BACKEND"] == backend else {}
            key = "bucket_name" if scheme == "s3://" else "azure_container"
            options.update({key: bucket, "location": prefix.strip("/")})
            try:
                store = import_string(backend)
            except ImportError as exc:
                raise BackupError(f"{spec}: {exc}; install the extra ('.[s3]' or '.[azure]')") from None
            return store(**options)
    return FileSystemStorage(location=str(Path(spec).resolve()))


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a storage backend raises when it cannot be reached or refuses (disk, S3, Azure): reported in one line."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    except ImportError:
        pass
    try:
        from azure.core.exceptions import AzureError

        errors.append(AzureError)
    except ImportError:
        pass
    return tuple(errors)


def artifact_storage() -> Storage:
    return storages["artifacts"]


def sha256_of_file(handle: Any) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _read_hash(storage: Storage, name: str) -> str:
    with storage.open(name, "rb") as handle:
        return sha256_of_file(handle)


# --- what the database points at -----------------------------------------------------------------------------------


def referenced_files(cursor: Any) -> list[StoredFile]:
    """Every file the database names, read with `cursor` (Django's, or sqlite3's on a copy): plain SQL on columns
    that every schema since the first migration has, so it also reads an older backup's database."""
    # Looked up by label, not imported: the commands live in the registry, which imports no app above it.
    versions = apps.get_model("registry", "ModelVersion")._meta.db_table
    models_ = apps.get_model("registry", "RegisteredModel")._meta.db_table
    cursor.execute(
        f"SELECT m.name, v.version, v.artifact_path, v.sha256, v.evaluation_data_path "  # noqa: S608 - table names
        f"FROM {versions} v JOIN {models_} m ON m.id = v.model_id ORDER BY m.name, v.version"
    )
    files: list[StoredFile] = []
    for name, number, artifact, sha256, evaluation in cursor.fetchall():
        label = f"{name} v{number}"
        files.append(StoredFile(artifact, "artifact", label, registered_sha256=sha256))
        if evaluation:
            files.append(StoredFile(evaluation, "evaluation", label))
    if not apps.is_installed("monitoring"):
        return files
    references = apps.get_model("monitoring", "ReferenceDataset")._meta.db_table
    cursor.execute(
        f"SELECT m.name, v.version, r.path FROM {references} r "  # noqa: S608 - table names
        f"JOIN {versions} v ON v.id = r.version_id JOIN {models_} m ON m.id = v.model_id ORDER BY m.name, v.version"
    )
    files.extend(StoredFile(path, "reference", f"{name} v{number}") for name, number, path in cursor.fetchall())
    return files


# --- backup --------------------------------------------------------------------------------------------------------


def backup(spec: str) -> dict[str, Any]:
    """Write a backup to `spec` (an empty directory or prefix); answer the manifest."""
    target = location(spec)
    if target.exists(MANIFEST):
        raise BackupError(f"{spec} already holds a backup ({MANIFEST}): give an empty directory or prefix")
    vendor = connection.vendor
    if vendor not in DUMP_NAMES:
        raise BackupError(f"backups support PostgreSQL and SQLite, not {vendor}")
    with tempfile.TemporaryDirectory(prefix="modelworks-backup-") as tmp:
        dump = Path(tmp) / DUMP_NAMES[vendor]
        files = _pg_dump(dump) if vendor == "postgresql" else _sqlite_dump(dump)
        with dump.open("rb") as handle:
            dump_sha = sha256_of_file(handle)
            handle.seek(0)
            _put(target, DUMP_NAMES[vendor], File(handle))
    unique = {item.path: item for item in reversed(files)}  # one copy of a path named twice (the first naming wins)
    copied = [_copy_out(target, item) for item in files if unique.get(item.path) is item]
    manifest = {
        "format": FORMAT,
        "created_at": timezone.now().isoformat(),
        "database": {"engine": vendor, "file": DUMP_NAMES[vendor], "sha256": dump_sha},
        "files": [asdict(item) for item in copied],
    }
    _put(target, MANIFEST, ContentFile(json.dumps(manifest, indent=1).encode()))
    return manifest


def _pg_dump(dump: Path) -> list[StoredFile]:
    if connection.in_atomic_block:
        raise BackupError("a backup needs its own transaction: run it outside one")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
        files = referenced_files(cursor)
        # The exporting transaction stays open until pg_dump has run: it reads exactly this snapshot.
        _run(["pg_dump", "--format=custom", f"--snapshot={snapshot}", f"--file={dump}"], "pg_dump")
    return files


def _sqlite_dump(dump: Path) -> list[StoredFile]:
    source = sqlite3.connect(settings.DATABASES["default"]["NAME"], timeout=30)
    copy = sqlite3.connect(dump)
    try:
        source.backup(copy)  # one step: the copy is the database at one instant
        return referenced_files(copy.cursor())
    finally:
        copy.close()
        source.close()


def _copy_out(target: Storage, item: StoredFile) -> StoredFile:
    storage = artifact_storage()
    try:
        with storage.open(item.path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise BackupError(f"{item.version}: its {item.kind} {item.path} is not in the artifacts storage") from None
    sha256 = hashlib.sha256(data).hexdigest()
    if item.registered_sha256 and sha256 != item.registered_sha256:
        raise BackupError(
            f"{item.version}: the stored artifact has sha256 {sha256}, registered {item.registered_sha256}; "
            "refusing to back up a tampered artifact"
        )
    _put(target, FILES_PREFIX + item.path, ContentFile(data))
    return StoredFile(item.path, item.kind, item.version, item.registered_sha256, sha256)


def _put(storage: Storage, name: str, content: File) -> None:
    if storage.exists(name):
        raise BackupError(f"{name} already exists at the destination: give an empty directory or prefix")
    saved = storage.save(name, content)
    if saved != name:
        raise BackupError(f"the destination stored {name} as {saved}: give an empty directory or prefix")


# --- restore -------------------------------------------------------------------------------------------------------


def restore(spec: str) -> dict[str, Any]:
    """Restore the backup at `spec` into this (empty) database and the artifacts storage; answer a summary."""
    source = location(spec)
    manifest = _manifest(source, spec)
    database = manifest["database"]
    if database["engine"] != connection.vendor:
        raise BackupError(f"the backup is of a {database['engine']} database; this one is {connection.vendor}")
    files = [StoredFile(**item) for item in manifest["files"]]
    _check_backup(source, database, files)
    _require_empty_database()
    missing = _check_target(files)
    with tempfile.TemporaryDirectory(prefix="modelworks-restore-") as tmp:
        dump = Path(tmp) / database["file"]
        with source.open(database["file"], "rb") as handle, dump.open("wb") as out:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                out.write(chunk)
        _pg_restore(dump) if connection.vendor == "postgresql" else _sqlite_restore(dump)
    for item in missing:
        with source.open(FILES_PREFIX + item.path, "rb") as handle:
            _put(artifact_storage(), item.path, File(handle))
    verified = _verify_restored({item.path: item for item in files})
    return {"database": database["engine"], "files": len(files), "copied": len(missing), "artifacts_verified": verified}


def _manifest(source: Storage, spec: str) -> dict[str, Any]:
    if not source.exists(MANIFEST):
        raise BackupError(f"{spec} holds no {MANIFEST}: not a backup, or one that did not finish")
    with source.open(MANIFEST, "rb") as handle:
        manifest = json.load(handle)
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{spec}: backup format {manifest.get('format')!r}, this version reads {FORMAT}")
    return manifest


def _check_backup(source: Storage, database: dict[str, Any], files: list[StoredFile]) -> None:
    """Every file in the backup is the one the manifest names, before anything is restored."""
    actual = _read_hash(source, database["file"])
    if actual != database["sha256"]:
        raise BackupError(f"the backup's database dump has sha256 {actual}, the manifest {database['sha256']}")
    for item in files:
        try:
            actual = _read_hash(source, FILES_PREFIX + item.path)
        except FileNotFoundError:
            raise BackupError(f"{item.version}: the backup lacks its {item.kind} {item.path}") from None
        if actual != item.sha256 or (item.registered_sha256 and actual != item.registered_sha256):
            raise BackupError(
                f"{item.version}: the backup's copy of its {item.kind} {item.path} has sha256 {actual}, "
                f"the manifest says {item.sha256}; refusing to restore"
            )


def _require_empty_database() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        else:
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        tables = cursor.fetchone()[0]
    if tables:
        name = connection.settings_dict["NAME"]
        raise BackupError(f"the database {name} is not empty ({tables} tables): restore only into an empty one")


def _check_target(files: list[StoredFile]) -> list[StoredFile]:
    """The files the target storage lacks; one it holds must be the backup's very file (a storage replicated from
    the lost site keeps its artifacts), else the restore is refused naming the version."""
    storage, missing = artifact_storage(), []
    for item in files:
        if not storage.exists(item.path):
            missing.append(item)
            continue
        actual = _read_hash(storage, item.path)
        if actual != item.sha256:
            raise BackupError(
                f"{item.version}: the target storage holds its {item.kind} {item.path} with sha256 {actual}, "
                f"the backup {item.sha256}; refusing to restore over an altered file"
            )
    return missing


def _verify_restored(backed_up: dict[str, StoredFile]) -> int:
    """Every file the restored database names is in the storage; every artifact hashes to what the restored
    registry recorded. Only then is the restore good."""
    storage, verified = artifact_storage(), 0
    with connection.cursor() as cursor:
        wanted = referenced_files(cursor)
    for item in wanted:
        if item.path not in backed_up or not storage.exists(item.path):
            raise BackupError(f"{item.version}: its {item.kind} {item.path} is not in the restored storage")
        actual = _read_hash(storage, item.path)
        expected = item.registered_sha256 or backed_up[item.path].sha256
        if actual != expected:
            raise BackupError(
                f"{item.version}: the restored {item.kind} {item.path} has sha256 {actual}, expected {expected}; "
                "the restore is NOT good"
            )
        verified += item.kind == "artifact"
    return verified


def _pg_restore(dump: Path) -> None:
    connection.close()  # pg_restore's own connection does the work; ours reconnects to check it afterwards
    _run(
        ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
         f"--dbname={connection.settings_dict['NAME']}", str(dump)],
        "pg_restore",
    )  # fmt: skip


def _sqlite_restore(dump: Path) -> None:
    connection.close()
    copy = sqlite3.connect(dump)
    target = sqlite3.connect(settings.DATABASES["default"]["NAME"], timeout=30)
    try:
        copy.backup(target)
    finally:
        target.close()
        copy.close()


def _run(argv: list[str], what: str) -> None:
    """pg_dump / pg_restore on the configured database, bounded by MODELWORKS_BACKUP_TIMEOUT_S."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "PGHOST": str(db.get("HOST") or ""),
        "PGPORT": str(db.get("PORT") or ""),
        "PGUSER": str(db.get("USER") or ""),
        "PGPASSWORD": str(db.get("PASSWORD") or ""),
        "PGDATABASE": str(db["NAME"]),
        "PGCONNECT_TIMEOUT": "10",
    }
    for option, variable in (("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT")):  # from DATABASE_URL's query
        if db.get("OPTIONS", {}).get(option):
            env[variable] = str(db["OPTIONS"][option])
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            argv, env=env, capture_output=True, text=True, timeout=settings.MODELWORKS_BACKUP_TIMEOUT_S
        )
    except FileNotFoundError:
        raise BackupError(f"{what} is not installed (the PostgreSQL client tools, version >= the server's)") from None
    except subprocess.TimeoutExpired:
        limit = settings.MODELWORKS_BACKUP_TIMEOUT_S
        raise BackupError(f"{what} ran past MODELWORKS_BACKUP_TIMEOUT_S ({limit} s)") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()] or ["no message"]
        raise BackupError(f"{what} failed: {lines[-1]}")
