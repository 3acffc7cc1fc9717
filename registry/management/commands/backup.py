"""`manage.py backup DEST`: the database and every stored file it names, with a manifest (config/backup.py)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from config import backup


class Command(BaseCommand):
    help = (
        "Back up the platform to DEST (an empty directory, or s3://bucket/prefix, azure://container/prefix): a "
        "consistent database dump and every model artifact, evaluation and reference sample, with their sha256s "
        "in manifest.json (written last: a backup without it did not finish)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("dest", help="an empty directory or object-store prefix")

    def handle(self, *args, **opts) -> None:
        try:
            manifest = backup.backup(opts["dest"])
        except backup.BackupError as exc:
            raise CommandError(str(exc)) from None
        except backup.storage_errors() as exc:  # FileNotFoundError of a vanished file is caught where it is named
            raise CommandError(f"backup failed on the storage: {type(exc).__name__}: {exc}") from None
        size = len(manifest["files"])
        self.stdout.write(f"backed up the {manifest['database']['engine']} database and {size} files to {opts['dest']}")
