from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from registry import audit
from registry.models import AuditSource


def _time(value: str | None, option: str):
    if not value:
        return None
    try:
        when = parse_datetime(value)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise CommandError(f"{option} {value!r}: give an ISO 8601 time with its offset, e.g. 2026-01-31T00:00:00Z")
    return when


class Command(BaseCommand):
    help = (
        "Write the audit trail (newest first) as JSON lines or CSV, to stdout or --output; filters narrow it. "
        "Old entries go by themselves after MODELWORKS_AUDIT_RETENTION_DAYS; --prune does it now."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--output", help="a file to write (default: stdout)")
        parser.add_argument("--action", default="", help='an action, or a prefix ending in "." (api_key.)')
        parser.add_argument("--source", default="", choices=["", *AuditSource.values])
        parser.add_argument("--actor", default="", help="a user's name or id")
        parser.add_argument("--request-id", default="")
        parser.add_argument("--since", help="ISO 8601 time, inclusive")
        parser.add_argument("--until", help="ISO 8601 time, exclusive")
        parser.add_argument("--prune", action="store_true", help="only delete entries past the retention, and say so")

    def handle(self, *args, **opts) -> None:
        if opts["prune"]:
            self.stdout.write(f"deleted {audit.prune()} audit entries past the retention")
            return
        rows = audit.entries(
            action=opts["action"], source=opts["source"], actor=opts["actor"], request_id=opts["request_id"],
            since=_time(opts["since"], "--since"), until=_time(opts["until"], "--until"),
        )  # fmt: skip
        lines = audit.csv_lines(rows) if opts["format"] == "csv" else audit.jsonl_lines(rows)
        if not opts["output"]:
            for line in lines:
                self.stdout.write(line if isinstance(line, str) else line.decode(), ending="")
            return
        try:
            with open(opts["output"], "wb") as out:
                for line in lines:
                    out.write(line.encode() if isinstance(line, str) else line)
        except OSError as exc:
            raise CommandError(f"--output: cannot write {opts['output']}: {exc.strerror}") from None
