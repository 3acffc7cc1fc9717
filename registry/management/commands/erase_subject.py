from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from registry.cli import one_line
from registry.subjects import subject_erase


class Command(BaseCommand):
    help = (
        "Erase everything held for a routing key or entity id (GDPR erasure): prediction and shadow log, dead "
        "letters, feature stores, exposures, feedback, business events; one transaction per store. Prints the "
        "receipt (rows per table); --dry-run counts without deleting."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("key", help="the routing key or entity id, as the client sent it")
        parser.add_argument("--dry-run", action="store_true", help="count what would be erased, delete nothing")

    def handle(self, *args, **opts) -> None:
        try:
            receipt = subject_erase(key=opts["key"], dry_run=opts["dry_run"], source="command")
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        verb = "would erase" if receipt["dry_run"] else "erased"
        for store, tables in receipt["counts"].items():
            for table, rows in tables.items():
                self.stdout.write(f"{store}\t{table}\t{rows}")
        self.stdout.write(f"{verb} {receipt['total']} rows for subject {receipt['subject']}")
        if receipt["failed"]:
            failed = "; ".join(f"{store}: {error}" for store, error in receipt["failed"].items())
            raise CommandError(f"not erased from {len(receipt['failed'])} store(s), run again: {failed}")
