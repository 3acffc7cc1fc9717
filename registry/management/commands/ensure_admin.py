from __future__ import annotations

import os

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from config.local_platform import admin_ensure
from registry import audit
from registry.cli import one_line


class Command(BaseCommand):
    help = (
        "Create the admin user once. Credentials from MODELWORKS_ADMIN_USER / MODELWORKS_ADMIN_PASSWORD; "
        "without a password one is generated and printed this one time. --reset-password gives the user a new one."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--reset-password", action="store_true",
            help="set a new password (MODELWORKS_ADMIN_PASSWORD, or a generated one printed once); creates the user "
                 "if it does not exist",
        )  # fmt: skip
        parser.add_argument(
            "--porcelain", action="store_true",
            help="print one tab-separated line for scripts: created|reset|unchanged, the user, the generated password",
        )  # fmt: skip

    @audit.command
    def handle(self, *args, **opts) -> None:
        username = os.environ.get("MODELWORKS_ADMIN_USER", "admin")
        try:
            login = admin_ensure(
                username=username, password=os.environ.get("MODELWORKS_ADMIN_PASSWORD") or None,
                reset=opts["reset_password"],
            )  # fmt: skip
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from None
        if opts["porcelain"]:
            self.stdout.write("\t".join([login.state, login.username, login.password or ""]))
            return
        if login.state == "unchanged":
            self.stdout.write(
                f"Admin user '{username}' already exists (password unchanged; "
                "`python manage.py ensure_admin --reset-password` sets a new one)."
            )
            return
        what = "created with" if login.state == "created" else "now has"
        if login.from_env:
            self.stdout.write(f"Admin user '{username}' {what} the password from MODELWORKS_ADMIN_PASSWORD.")
        else:
            self.stdout.write(
                self.style.WARNING(f"Admin user '{username}' {what} password: {login.password}  (shown only once)")
            )
