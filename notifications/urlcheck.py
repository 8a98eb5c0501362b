"""Where webhooks may go (SSRF): http(s) only, never the portal itself, and never an address on
loopback, private, link-local, shared or reserved networks -- checked when an endpoint is created or
changed, and again before every delivery (DNS can change). `WEBHOOK_ALLOW_PRIVATE_NETWORKS` lifts
the address rule (tests, local development)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class UrlRefused(Exception):
    """The URL may not receive webhooks; the message says why."""


def _host_port(url: str) -> tuple[str, int]:
    if not isinstance(url, str) or len(url) > 2000:
        raise UrlRefused("Enter a URL of at most 2000 characters.")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise UrlRefused("Enter a valid URL.") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("Use an http:// or https:// URL.")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UrlRefused("The URL needs a host.")
    if parts.username or parts.password:
        raise UrlRefused("Put no user name or password in the URL; the signature authenticates.")
    return host, port or (443 if parts.scheme == "https" else 80)


def _refused_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to now (a literal address: itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]")).compressed]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UrlRefused(f"The host {host} does not resolve.") from None
    return sorted({info[4][0] for info in infos})


def check_url(url: str) -> str:
    """`url`, stripped, when webhooks may go there; else raises UrlRefused."""
    host, port = _host_port(url)
    portal = (urlsplit(settings.PORTAL_BASE_URL).hostname or "").lower()
    if portal and host == portal:
        raise UrlRefused("The URL points at the portal itself.")
    if not settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS:
        addresses = resolve(host, port)
        if not addresses or any(_refused_address(a) for a in addresses):
            raise UrlRefused(
                "The URL points at a private, loopback or link-local address; use a public one."
            )
    return url.strip()
