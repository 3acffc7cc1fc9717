"""How long `manage.py backup` and `manage.py restore` take: the recovery time of the database and artifacts.

How it measures
- The platform DATABASE_URL points at (PostgreSQL, seeded: `python manage.py seed_demo`), its prediction log grown
  to --log-rows rows first by copying its own rows (a log of that size is what a restore mostly moves).
- Per repeat: `backup` into a new directory, then `restore` of it into a scratch database beside it
  (<name>_bench_restore, emptied before each restore) and a new artifacts directory. Medians of --repeats.
Results on stdout. Run: DJANGO_SETTINGS_MODULE=config.settings python bench/backup_restore.py --log-rows 100000
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import django

FILE_STORAGE = "django.core.files.storage.FileSystemStorage"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--log-rows", type=int, default=0, help="grow the prediction log to this many rows first")
    opts = parser.parse_args()
    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import override_settings

    from serving.models import PredictionLog

    _grow_log(connection, PredictionLog, opts.log_rows)
    source = connection.settings_dict["NAME"]
    scratch = f"{source}_bench_restore"
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [scratch])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{scratch}"')
        cursor.execute("SELECT pg_database_size(%s), count(*) FROM serving_predictionlog", [source])
        size, rows = cursor.fetchone()
    backups, restores = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(opts.repeats):
            target = Path(tmp) / f"backup-{n}"
            started = time.perf_counter()
            call_command("backup", str(target), stdout=io.StringIO())
            backups.append(time.perf_counter() - started)
            dump = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
            connection.close()
            connection.settings_dict["NAME"] = scratch
            try:
                with connection.cursor() as cursor:
                    cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                artifacts = {"location": str(Path(tmp) / f"artifacts-{n}")}
                storages = {**settings.STORAGES, "artifacts": {"BACKEND": FILE_STORAGE, "OPTIONS": artifacts}}
                with override_settings(STORAGES=storages):  # a fresh storage: the restore copies every file
                    started = time.perf_counter()
                    call_command("restore", str(target), stdout=io.StringIO())
                    restores.append(time.perf_counter() - started)
            finally:
                connection.close()
                connection.settings_dict["NAME"] = source
    print(f"database {size / 2**20:.1f} MiB, prediction log {rows:,} rows; backup directory {dump / 2**20:.1f} MiB")
    print(f"backup  median {statistics.median(backups):.2f} s  ({', '.join(f'{t:.2f}' for t in backups)})")
    print(f"restore median {statistics.median(restores):.2f} s  ({', '.join(f'{t:.2f}' for t in restores)})")


def _grow_log(connection, model, rows: int) -> None:
    """Copy the log's own rows (new ids and request ids) until it holds `rows`."""
    fields = [f.column for f in model._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(fields)
    values = ", ".join("md5(random()::text)" if name == "request_id" else name for name in fields)
    table = model._meta.db_table
    with connection.cursor() as cursor:
        while True:
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - the model's own table
            have = cursor.fetchone()[0]
            if not have or have >= rows:
                return
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {values} FROM {table} LIMIT %s",  # noqa: S608
                [rows - have],
            )


if __name__ == "__main__":
    main()
