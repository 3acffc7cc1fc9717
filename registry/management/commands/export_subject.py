from __future__ import annotations

import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from registry.cli import one_line
from registry.subjects import subject_export


class Command(BaseCommand):
    help = (
        "Everything held for a routing key or entity id (GDPR access request), as JSON: per store and table, "
        "every row. To standard output, or to --output FILE."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("key", help="the routing key or entity id, as the client sent it")
        parser.add_argument("--output", help="write the JSON to this file instead of standard output")

    def handle(self, *args, **opts) -> None:
        try:
            export = subject_export(key=opts["key"], source="command")
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        text = json.dumps(export, indent=2, ensure_ascii=False)
        if opts["output"]:
            try:
                Path(opts["output"]).write_text(text + "\n", encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"cannot write {opts['output']}: {exc.strerror}") from None
            rows = sum(len(r) for tables in export["stores"].values() for r in tables.values())
            self.stdout.write(f"wrote {rows} rows for subject {export['subject']} to {opts['output']}")
            return
        self.stdout.write(text)
