from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from registry import audit
from registry.cli import one_line
from serving.keys import api_key_create


class Command(BaseCommand):
    help = "Create an API key. The raw key is printed once, alone on the last line; only its hash is stored."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--scope", action="append", required=True, dest="scopes",
            help="predict:<model>, predict:*, registry:read, registry:write, deploy:<model> or deploy:* (repeatable)",
        )  # fmt: skip
        parser.add_argument("--expires-in-days", type=int, help="default: never expires")
        parser.add_argument("--rate-limit", type=int, default=0, help="requests per second, 0 for no limit")

    @audit.command
    def handle(self, *args, **opts) -> None:
        days = opts["expires_in_days"]
        expires = timezone.now() + timedelta(days=days) if days is not None else None
        try:
            key, raw = api_key_create(
                name=opts["name"], scopes=opts["scopes"], expires_at=expires, rate_limit_per_second=opts["rate_limit"]
            )
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        self.stderr.write(f"API key '{key.name}' ({', '.join(key.scopes)}); store it now, it is not shown again:")
        self.stdout.write(raw)
