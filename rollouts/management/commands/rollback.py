from __future__ import annotations

import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from registry import refs
from registry.cli import one_line
from rollouts import services as rollouts


class Command(BaseCommand):
    help = (
        "Put the previous production version of MODEL back now (an active rollout is aborted instead; refused while "
        "an experiment runs). MODEL may be a reference (models:/NAME/4, models:/NAME@production): then that version "
        "must be the one taken out, or nothing is done."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("model", help="NAME, or models:/NAME/VERSION or models:/NAME@ALIAS")

    def handle(self, *args, model: str, **opts) -> None:
        started = time.perf_counter()
        try:
            registered, ref = refs.model_named(model)
            expected = refs.resolve(registered, ref) if ref is not None else None
            taken_out, serving_now = rollouts.model_rollback(model=registered, expected=expected)
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        took = (time.perf_counter() - started) * 1000
        self.stdout.write(
            f"{registered.name}: v{serving_now.version} serves production again, v{taken_out.version} is rolled back "
            f"({took:.0f} ms; every web process follows within a second)"
        )
