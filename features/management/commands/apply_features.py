from __future__ import annotations

from pathlib import Path

import yaml
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from features.definitions import definitions_apply
from registry import audit
from registry.cli import one_line


class Command(BaseCommand):
    help = "Create or update entities and feature views from a YAML file; prints the plan (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="YAML with 'entities:' and 'feature_views:' lists (see README)")
        parser.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")

    @audit.command
    def handle(self, *args, **opts) -> None:
        try:
            spec = yaml.safe_load(Path(opts["file"]).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise CommandError(f"cannot read {opts['file']}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise CommandError(f"{opts['file']}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(spec, dict) or set(spec) - {"entities", "feature_views"}:
            raise CommandError(f"{opts['file']}: expected a mapping with 'entities' and 'feature_views' only")
        try:
            plan = definitions_apply(
                entities=spec.get("entities") or [], views=spec.get("feature_views") or [], dry_run=opts["dry_run"]
            )
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        for line in plan:
            self.stdout.write(("would " if opts["dry_run"] else "") + line)
        if not plan:
            self.stdout.write("no changes")
