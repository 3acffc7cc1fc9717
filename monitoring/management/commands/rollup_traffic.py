"""`manage.py rollup_traffic [--minutes N]`: recount the prediction log into the console's per-minute traffic."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from monitoring.traffic import WINDOW_MINUTES, traffic_rollup


class Command(BaseCommand):
    help = (
        "Recount the prediction log's last N whole minutes into the per-minute traffic the console charts (beat does "
        f"the last {WINDOW_MINUTES} every minute; widen it after a database outage left buffered rows written late)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--minutes", type=int, default=WINDOW_MINUTES, help="how far back (default %(default)s)")

    def handle(self, *args, minutes: int, **opts) -> None:
        if minutes < 1 or minutes > 60 * 24 * 31:
            raise CommandError("--minutes must be between 1 and 44640 (31 days)")
        stored = traffic_rollup(minutes=minutes)
        self.stdout.write(f"{stored} model-version-minutes counted over the last {minutes} minutes")
