from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from features.ingest import DEFAULT_CHUNK, count_rows, feature_file_ingest
from features.models import FeatureView
from features.services import RowsRejected
from registry.cli import one_line


class Command(BaseCommand):
    help = "Append a CSV or Parquet file of feature rows to a view's offline store, in chunks; reruns resume."

    def add_arguments(self, parser) -> None:
        parser.add_argument("view")
        parser.add_argument("file", help="columns: the entity's join key, event_timestamp, and features")
        parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
        parser.add_argument("--restart", action="store_true", help="ingest the whole file again, ignoring progress")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **opts) -> None:
        view = FeatureView.objects.select_related("entity").filter(name=opts["view"]).first()
        if view is None:
            raise CommandError(f"no feature view named '{opts['view']}'")
        if opts["chunk_size"] < 1:
            raise CommandError("--chunk-size must be positive")
        path = Path(opts["file"])
        try:
            total = count_rows(path) if path.is_file() else None
            with tqdm(total=total, unit="rows", disable=opts["no_progress"], file=self.stderr._out) as bar:
                job = feature_file_ingest(view=view, path=path, chunk_size=opts["chunk_size"],
                                          restart=opts["restart"], progress=bar.update)  # fmt: skip
        except RowsRejected as exc:
            first = exc.errors[0]
            raise CommandError(f"{path.name} row {first['row']}, {first['field']}: {first['message']} "
                               "(earlier chunks are stored; rerun to resume)") from None  # fmt: skip
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        self.stdout.write(
            f"{path.name} -> {view.name}: {job.rows_done} rows ingested "
            "(`manage.py materialize` or the scheduled run serves them online)"
        )
