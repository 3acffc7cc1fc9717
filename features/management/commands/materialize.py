from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from features.models import FeatureView
from features.schema import parse_timestamp
from features.services import feature_view_materialize


class Command(BaseCommand):
    help = (
        "Copy the newest offline values to the online store: incrementally from each view's watermark, or for "
        "event times in [--start, --end]. Only newer values are written; running it again writes nothing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("view", nargs="?", help="one view (default: all)")
        parser.add_argument("--start", help="ISO-8601 event time (inclusive)")
        parser.add_argument("--end", help="ISO-8601 event time (inclusive; default now)")

    def handle(self, *args, **opts) -> None:
        start = end = None
        for option in ("start", "end"):
            if opts[option] is not None and parse_timestamp(opts[option]) is None:
                raise CommandError(f"--{option}: {opts[option]!r} is not an ISO-8601 time")
        start, end = (parse_timestamp(opts[o]) if opts[o] else None for o in ("start", "end"))
        if start and end and start > end:
            raise CommandError("--start is after --end")
        views = FeatureView.objects.select_related("entity").order_by("name")
        if opts["view"]:
            views = views.filter(name=opts["view"])
            if not views:
                raise CommandError(f"no feature view named '{opts['view']}'")
        for view in views:
            run = feature_view_materialize(view=view, start=start, end=end)
            if run is None:
                self.stdout.write(f"{view.name}: skipped, another materialization is running")
            else:
                self.stdout.write(f"{view.name}: {run.rows_read} values read, {run.rows_written} written online")
