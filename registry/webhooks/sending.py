"""One webhook attempt: a signed JSON POST to the checked address of a guarded target, redirects never followed.

http.client is used directly: it follows no redirect (urllib followed a 302 to any address as a GET) and reads no
proxy from the environment, and the connection goes to the address `targets.check_target` allowed, with the name as
Host and as the TLS server name (the certificate is verified against it), so the name is never resolved twice.
What is recorded says what the receiver answered, never what lies behind a redirect, and connection failures are
recorded alike ("connection failed"), so the outcome is no probe of what is listening where.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass

from django.conf import settings

from registry.webhooks import signing, targets

TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Attempt:
    delivered: bool
    retryable: bool  # another attempt may do better: a network error, 5xx or 429
    outcome: str  # what is recorded: "HTTP 200", "HTTP 302: redirects are not followed", "connection failed", ...


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, target: targets.Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, target: targets.Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def webhook_attempts() -> int:
    return max(1, settings.MODELWORKS_WEBHOOK_ATTEMPTS)


def webhook_backoff_s(attempt: int) -> float:
    """How long to wait after failed attempt `attempt` (1-based): the base, doubled per attempt."""
    return settings.MODELWORKS_WEBHOOK_BACKOFF_MS / 1000 * 2 ** (attempt - 1)


def post(*, url: str, secret: str, message_id: str, body: bytes, timeout: float = TIMEOUT_S) -> Attempt:
    """POST `body` to `url`, checked again now, signed with `secret`; never raises."""
    try:
        target = targets.check_target(url)
    except targets.TargetUnresolved:
        return Attempt(False, True, "the host did not resolve")
    except targets.TargetRefused:
        return Attempt(False, False, "refused: the target is not an allowed address")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "modelworks-webhooks",
        **signing.signed_headers(secret=secret, message_id=message_id, body=body),
    }
    connection = (_PinnedHTTPS if target.scheme == "https" else _PinnedHTTP)(target, timeout)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        code = connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return Attempt(False, True, "connection failed")
    finally:
        connection.close()
    if 200 <= code < 300:
        return Attempt(True, False, f"HTTP {code}")
    if 300 <= code < 400:
        return Attempt(False, False, f"HTTP {code}: redirects are not followed")
    return Attempt(False, code >= 500 or code == 429, f"HTTP {code}")
