"""What `make run` sets up for a person trying the platform on their own machine: the admin login and a demo API key.

The management commands `ensure_admin` and `demo_api_key` are thin wrappers around these two services.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from registry import audit
from serving.keys import api_key_create, hash_key
from serving.models import ApiKey

DEMO_KEY_NAME = "demo (make run)"
DEMO_KEY_SCOPES = ["predict:*", "registry:read", "registry:write", "deploy:*"]


@dataclass(frozen=True)
class AdminLogin:
    """The outcome of admin_ensure: `password` is set only when it was generated now (it is shown this once)."""

    username: str
    state: str  # "created", "reset" or "unchanged"
    password: str | None
    from_env: bool


@transaction.atomic
def admin_ensure(*, username: str, password: str | None = None, reset: bool = False) -> AdminLogin:
    """Create the superuser `username` once; with reset, give it a new password (generated unless one is given) and
    make sure it can log in to the admin. A given password must pass Django's password validators when it replaces
    one (ValidationError naming the field otherwise)."""
    if not username or not username.strip():
        raise ValidationError({"username": ["give the admin user a name (MODELWORKS_ADMIN_USER)"]})
    User = get_user_model()
    user = User.objects.select_for_update().filter(username=username).first()
    if user is not None and not reset:
        return AdminLogin(username, "unchanged", None, False)
    generated = None if password else secrets.token_urlsafe(12)
    if user is None:
        user = User.objects.create_superuser(username=username, email="", password=password or generated)
        audit.record("user.created", target=user, before=None, after=audit.user_snapshot(user),
                     source=audit.current_source())  # fmt: skip
        return AdminLogin(username, "created", generated, bool(password))
    if password:
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise ValidationError({"MODELWORKS_ADMIN_PASSWORD": exc.messages}) from None
    before = audit.user_snapshot(user)
    user.set_password(password or generated)
    user.is_active = user.is_staff = user.is_superuser = True
    user.save(update_fields=["password", "is_active", "is_staff", "is_superuser"])
    audit.record("user.password_reset", target=user, before=before, after=audit.user_snapshot(user),
                 source=audit.current_source())  # fmt: skip
    return AdminLogin(username, "reset", generated, bool(password))


def _authenticates(raw: str) -> bool:
    """The raw key is a stored, unrevoked, unexpired API key (the rule serving.keys.api_key_lookup applies), read
    from the database itself rather than a process's memory of keys."""
    key = ApiKey.objects.filter(key_hash=hash_key(raw)).first()
    return key is not None and key.active


def demo_api_key(path: Path) -> tuple[str, bool]:
    """The demo API key's raw value and whether it was created now.

    The raw value of a key is never stored in the database, so the demo keeps it in `path` (mode 0600): every
    `make run` prints the same key. When the stored key no longer authenticates (revoked, expired, the file is gone or
    the database was replaced) a new one is created (DEMO_KEY_SCOPES) and stored. A demo key from before a scope
    joined DEMO_KEY_SCOPES (deploy:*, for the README's rollouts) is given it.
    """
    try:
        stored = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        stored = ""
    if stored and _authenticates(stored):
        key = ApiKey.objects.get(key_hash=hash_key(stored))
        if key.name == DEMO_KEY_NAME and not set(DEMO_KEY_SCOPES) <= set(key.scopes):
            before = {"scopes": list(key.scopes)}
            key.scopes = [*key.scopes, *(s for s in DEMO_KEY_SCOPES if s not in key.scopes)]
            key.save(update_fields=["scopes"])
            audit.record("api_key.changed", target=key, before=before, after={"scopes": key.scopes},
                         source=audit.current_source())  # fmt: skip
        return stored, False
    with transaction.atomic():
        _, raw = api_key_create(name=DEMO_KEY_NAME, scopes=list(DEMO_KEY_SCOPES))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(raw + "\n")
        os.chmod(partial, 0o600)  # an existing file keeps its old mode through O_CREAT
        os.replace(partial, path)
    return raw, True
