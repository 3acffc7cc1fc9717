from __future__ import annotations

import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from serving.services import prediction_log_kept_from, prediction_log_prune

AGE = re.compile(r"^(\d+)([dh])$")


class Command(BaseCommand):
    help = (
        "Delete prediction log rows older than an age, e.g. --older-than 30d (days) or 12h (hours); on PostgreSQL"
        " whole days go (the cutoff's own day stays)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--older-than", required=True)

    def handle(self, *args, **opts) -> None:
        match = AGE.match(opts["older_than"])
        if match is None:
            raise CommandError(f"--older-than {opts['older_than']!r}: write a number and d or h, e.g. 30d")
        amount, unit = int(match[1]), match[2]
        cutoff = timezone.now() - (timedelta(days=amount) if unit == "d" else timedelta(hours=amount))
        deleted = prediction_log_prune(before=cutoff)
        # The partitioned log goes by whole days: rows of the cutoff's own day stay until that day is past.
        kept_from = prediction_log_kept_from(cutoff)
        self.stdout.write(f"deleted {deleted} predictions logged before {kept_from:%Y-%m-%d %H:%M} UTC")
