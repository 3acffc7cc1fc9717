from __future__ import annotations

from pathlib import Path

import pandas as pd
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from features.historical import get_historical_features
from features.schema import EVENT_TIMESTAMP
from registry.cli import one_line


class Command(BaseCommand):
    help = "Point-in-time training data: entity rows (CSV/Parquet) joined with feature values as of each row's time."

    def add_arguments(self, parser) -> None:
        parser.add_argument("entities", help="CSV or Parquet with the entities' join keys and a timestamp column")
        parser.add_argument("output", help="where to write the result: .csv or .parquet")
        parser.add_argument("--features", required=True, help="comma-separated view:feature refs")
        parser.add_argument("--timestamp-column", default=EVENT_TIMESTAMP)
        parser.add_argument("--as-of-created", action="store_true",
                            help="only values already written at each row's time (no late backfills)")  # fmt: skip

    def handle(self, *args, **opts) -> None:
        source, output = Path(opts["entities"]), Path(opts["output"])
        for path in (source, output):
            if path.suffix.lower() not in (".csv", ".parquet"):
                raise CommandError(f"{path}: give a .csv or .parquet file")
        try:
            frame = pd.read_parquet(source) if source.suffix.lower() == ".parquet" else pd.read_csv(source)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read {source}: {exc}") from None
        refs = [ref.strip() for ref in opts["features"].split(",") if ref.strip()]
        try:
            result = get_historical_features(frame, refs, as_of_created=opts["as_of_created"],
                                             timestamp_column=opts["timestamp_column"])  # fmt: skip
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        if output.suffix.lower() == ".parquet":
            result.to_parquet(output, index=False)
        else:
            result.to_csv(output, index=False)
        filled = int(result[refs].notna().all(axis=1).sum())
        self.stdout.write(f"{output}: {len(result)} rows ({filled} with every feature), {len(refs)} features")
