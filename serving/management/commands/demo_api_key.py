from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from config.local_platform import DEMO_KEY_SCOPES, demo_api_key
from registry import audit


class Command(BaseCommand):
    help = (
        "Print the demo API key (scopes predict:*, registry:read, registry:write, deploy:*), creating it the first "
        "time. "
        "Its raw value is kept in <var>/demo-api-key (mode 0600), so every `make run` prints the same key; a key "
        "that no longer authenticates (revoked, expired) is replaced by a new one."
    )

    @audit.command
    def handle(self, *args, **opts) -> None:
        path = settings.VAR_DIR / "demo-api-key"
        raw, created = demo_api_key(path)
        if created:
            self.stderr.write(f"created the demo API key ({', '.join(DEMO_KEY_SCOPES)}); its raw value is in {path}")
        self.stdout.write(raw)
