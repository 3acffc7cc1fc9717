from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction


class Command(BaseCommand):
    help = (
        "Create the admin user once. Credentials from MODELWORKS_ADMIN_USER / MODELWORKS_ADMIN_PASSWORD; "
        "without a password one is generated and printed this one time."
    )

    @transaction.atomic
    def handle(self, *args, **opts) -> None:
        username = os.environ.get("MODELWORKS_ADMIN_USER", "admin")
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"Admin user '{username}' already exists.")
            return
        password = os.environ.get("MODELWORKS_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if os.environ.get("MODELWORKS_ADMIN_PASSWORD"):
            self.stdout.write(f"Admin user '{username}' created with the password from MODELWORKS_ADMIN_PASSWORD.")
        else:
            self.stdout.write(
                self.style.WARNING(f"Admin user '{username}' created with password: {password}  (shown only once)")
            )
