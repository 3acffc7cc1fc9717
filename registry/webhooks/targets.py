"""Where a webhook may go: http(s) only, and never to loopback, private, link-local (the cloud metadata service at
169.254.169.254), reserved or multicast addresses unless settings.MODELWORKS_WEBHOOK_ALLOWED_NETWORKS lists the
network.

`check_target` is called when a URL is saved (a 400 naming the field) and again before every delivery, on a fresh
resolution; the delivery then connects to the address checked here, never resolving the name a second time, so a name
that resolves to an allowed address at save (or at the check) and to a refused one later (DNS rebinding) is refused.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(Exception):
    """The URL may not be a webhook's target; the message says why, in words a person can act on."""


class TargetUnresolved(TargetRefused):
    """The name did not resolve (or not in time): perhaps it will later, so a delivery may try again."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # the name as written (sent as Host and as the TLS server name)
    port: int
    path: str  # path and query, as sent in the request line
    address: str  # the checked address the delivery connects to


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in settings.MODELWORKS_WEBHOOK_ALLOWED_NETWORKS]


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, within MODELWORKS_WEBHOOK_DNS_TIMEOUT_S (getaddrinfo has no timeout of its
    own: it runs in a daemon thread that is abandoned when late). The one place webhooks resolve names."""
    found: list[str] = []
    failed: list[BaseException] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found.extend(dict.fromkeys(str(info[4][0]) for info in infos))
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=lookup, daemon=True, name="webhook-dns")
    thread.start()
    thread.join(settings.MODELWORKS_WEBHOOK_DNS_TIMEOUT_S)
    if thread.is_alive():
        raise TargetUnresolved(f"{host} did not resolve within {settings.MODELWORKS_WEBHOOK_DNS_TIMEOUT_S} s")
    if failed or not found:
        raise TargetUnresolved(f"{host} does not resolve")
    return found


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: an IPv4 address in the last 32 bits


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches (mapped, 6to4, NAT64), judged as that address."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _refusal(address: IPAddress) -> str | None:
    """Why this address may not be a target, or None when it may."""
    address = _embedded_ipv4(address) or address
    if any(address in network for network in allowed_networks()):
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (the cloud metadata service lives there)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved address"
    return None


def check_target(url: str) -> Target:
    """The target `url` names, once every address it resolves to is allowed; TargetRefused saying why otherwise."""
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise TargetRefused("the URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("only http:// and https:// URLs can receive webhooks")
    host = parts.hostname
    if not host:
        raise TargetRefused("the URL names no host")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = resolve(host, port)
    for address in addresses:
        reason = _refusal(ipaddress.ip_address(address.split("%")[0]))
        if reason is not None:
            where = host if host == address else f"{host} resolves to {address}, which"
            raise TargetRefused(
                f"{where} is {reason}: webhooks may not target it unless MODELWORKS_WEBHOOK_ALLOWED_NETWORKS lists"
                " its network"
            )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=parts.scheme, host=host, port=port, path=path, address=addresses[0])


def mask_url(url: str) -> str:
    """The URL as shown to those who may not see it whole: scheme, host and port; the path, query and any userinfo
    (where tokens usually sit) replaced by an ellipsis. "https://hooks.example.com/…"."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "…"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    hidden = parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{host}{port}/{'…' if hidden else ''}"
