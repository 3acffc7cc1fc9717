"""Standard Webhooks signatures (https://www.standardwebhooks.com): each request carries `webhook-id` (the same on
every attempt of one message, for the receiver's deduplication), `webhook-timestamp` (seconds, of this attempt) and
`webhook-signature`: "v1," + base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")). A secret is "whsec_" + base64
of 32 random bytes; the receiver verifies with it, e.g. `standardwebhooks.Webhook(secret).verify(body, headers)`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(*, secret: str, message_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three headers for one attempt; without a secret (monitors made before webhooks were signed) no signature."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    headers = {"webhook-id": message_id, "webhook-timestamp": str(timestamp)}
    if secret:
        key = base64.b64decode(secret.removeprefix(PREFIX))
        signed = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        headers["webhook-signature"] = f"v1,{base64.b64encode(signed).decode()}"
    return headers
