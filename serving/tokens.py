"""Users' API tokens (`Authorization: Token mwt_...`): django-rest-knox's, kept as a SHA-512 digest and expiring
after MODELWORKS_TOKEN_TTL. The raw value is shown once, by POST /api/v1/auth/token/.

Tokens from before (DRF's authtoken: 40 hex digits, stored raw, shown in the admin, never expiring) were deleted by
serving's migration 'invalidate_raw_tokens': anyone who could open the admin could have copied them. A caller that
still sends one is told so, and how to get a new token.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from rest_framework import exceptions

OLD_TOKEN = re.compile(r"[0-9a-f]{40}")
GET_ONE = "get a new one with POST /api/v1/auth/token/ (username and password)"


@transaction.atomic
def user_token_create(*, user: Any) -> tuple[AuthToken, str]:
    """A new token for the user and its raw value, which is never stored and cannot be shown again."""
    return AuthToken.objects.create(user=user)


def token_digest(raw: str) -> str:
    return hash_token(raw)


def active_token_user(raw: str) -> int | None:
    """The id of the token's user when the token exists, has not expired and its user is active (one primary-key
    read); None otherwise."""
    live = AuthToken.objects.filter(digest=token_digest(raw), user__is_active=True, expiry__gt=timezone.now())
    return live.values_list("user_id", flat=True).first()


def refused_detail(raw: str) -> str:
    """What a refused token's 401 says on the prediction path (which does not read why it was refused)."""
    if OLD_TOKEN.fullmatch(raw):
        return f"tokens issued before tokens were stored hashed and expiring are no longer accepted: {GET_ONE}"
    return f"invalid or expired token: {GET_ONE}"


class UserTokenAuthentication(TokenAuthentication):
    """knox's authentication, looking the token up by its digest (the primary key) and saying why one is refused."""

    def authenticate_credentials(self, token: bytes):
        raw = token.decode("utf-8", errors="replace")
        found = AuthToken.objects.select_related("user").filter(digest=token_digest(raw)).first()
        if found is None:
            raise exceptions.AuthenticationFailed(refused_detail(raw) if OLD_TOKEN.fullmatch(raw) else "invalid token")
        if found.expiry is None:  # made in the admin with the expiry left empty: tokens must expire
            raise exceptions.AuthenticationFailed(f"this token has no expiry and is not accepted: {GET_ONE}")
        if found.expiry <= timezone.now():
            expired_at: datetime = found.expiry
            found.delete()
            raise exceptions.AuthenticationFailed(f"this token expired at {expired_at:%Y-%m-%d %H:%M} UTC: {GET_ONE}")
        return self.validate_user(found)
