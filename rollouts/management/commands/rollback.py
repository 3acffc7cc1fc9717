from __future__ import annotations

import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from registry.cli import one_line
from registry.models import RegisteredModel
from rollouts import services as rollouts


class Command(BaseCommand):
    help = (
        "Put the previous production version of MODEL back now (an active rollout is aborted instead; refused while "
        "an experiment runs)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("model")

    def handle(self, *args, model: str, **opts) -> None:
        started = time.perf_counter()
        registered = RegisteredModel.objects.filter(name=model).first()
        if registered is None:
            raise CommandError(f"no model named '{model}'")
        try:
            taken_out, serving_now = rollouts.model_rollback(model=registered)
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        took = (time.perf_counter() - started) * 1000
        self.stdout.write(
            f"{registered.name}: v{serving_now.version} serves production again, v{taken_out.version} is rolled back "
            f"({took:.0f} ms; every web process follows within a second)"
        )
