"""`manage.py restore SRC`: a backup into an empty database and the artifacts storage (config/backup.py)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from config import backup


class Command(BaseCommand):
    help = (
        "Restore the backup at SRC into this database, which must be empty, and the artifacts storage. Every file "
        "is checked against the manifest before anything is written, a file the storage already holds must be the "
        "same file, and every model artifact must hash to what the restored registry recorded. Afterwards: "
        "`migrate` (an older backup's schema), then `materialize --start ...` (the online store)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("src", help="a backup's directory or object-store prefix")

    def handle(self, *args, **opts) -> None:
        try:
            summary = backup.restore(opts["src"])
        except backup.BackupError as exc:
            raise CommandError(str(exc)) from None
        except backup.storage_errors() as exc:  # FileNotFoundError of a vanished file is caught where it is named
            raise CommandError(f"restore failed on the storage: {type(exc).__name__}: {exc}") from None
        self.stdout.write(
            f"restore good: the {summary['database']} database, {summary['files']} files ({summary['copied']} "
            f"copied, the rest already in the storage), {summary['artifacts_verified']} artifacts verified"
        )
