"""Where webhooks may go (SSRF): http(s) only, never the portal itself, and never an address on
loopback, private, link-local, shared or reserved networks -- checked when an endpoint is created or
changed, and again before every delivery (DNS can change). `WEBHOOK_ALLOW_PRIVATE_NETWORKS` lifts
the address rule (tests, local development).

At delivery (`pin_url`) the host is resolved once, every address it resolves to is checked, and
the request connects to the first of them (the resolver's order): not to the host name, which a
second resolution could answer differently (DNS rebinding). The `Host` header and, for https, the
TLS server name (SNI, and the certificate's name checked against it) stay the host's."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings


class UrlRefused(Exception):
    """The URL may not receive webhooks; the message says why."""


class UrlUnresolved(UrlRefused):
    """The host does not resolve now (a delivery retries later)."""


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
    """The addresses `host` resolves to now, in the resolver's order of preference (a literal
    address: itself). Raises UrlUnresolved."""
    try:
        return [ipaddress.ip_address(host.strip("[]")).compressed]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UrlUnresolved(f"The host {host} does not resolve.") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def _check_addresses(addresses: list[str], allow_private: bool | None = None) -> None:
    if settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS if allow_private is None else allow_private:
        return
    if not addresses or any(_refused_address(a) for a in addresses):
        raise UrlRefused(
            "The URL points at a private, loopback or link-local address; use a public one."
        )


def _not_the_portal(host: str) -> None:
    portal = (urlsplit(settings.PORTAL_BASE_URL).hostname or "").lower()
    if portal and host == portal:
        raise UrlRefused("The URL points at the portal itself.")


def check_url(url: str) -> str:
    """`url`, stripped, when webhooks may go there; else raises UrlRefused."""
    host, port = _host_port(url)
    _not_the_portal(host)
    if not settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS:
        _check_addresses(resolve(host, port))
    return url.strip()


@dataclass(frozen=True)
class Pinned:
    """A checked URL and the address to connect to: request `url` (the address in place of the
    host) with the `Host` header `host_header` and, for https, `extensions` naming the host for
    TLS (SNI and certificate verification), as httpx / httpcore take them."""

    url: str
    address: str
    host: str
    host_header: str
    extensions: dict


def _host_header(host: str, port: int | None) -> str:
    """The `Host` header of the URL (RFC 9110 7.2): its host (IDNA, an IPv6 literal in
    brackets) and its port when the URL names one."""
    name = host if host.isascii() else host.encode("idna").decode("ascii")
    if ":" in name:
        name = f"[{name}]"
    return name if port is None else f"{name}:{port}"


def pin_url(url: str, *, allow_private: bool | None = None, portal_ok: bool = False) -> Pinned:
    """Check `url` as `check_url` does, resolving its host once (also under
    `WEBHOOK_ALLOW_PRIVATE_NETWORKS`, which only lifts the address rule), and pin the request to
    the first address it resolved to. Raises UrlRefused, UrlUnresolved (the host does not
    resolve now).

    Other callers than webhook delivery (the gateway's upstreams, `credits.gateway`) pass their
    own `allow_private` (None: `WEBHOOK_ALLOW_PRIVATE_NETWORKS`) and `portal_ok=True` when the
    portal's own host is not refused (it is for webhooks only)."""
    host, port = _host_port(url)
    if not portal_ok:
        _not_the_portal(host)
    addresses = resolve(host, port)
    _check_addresses(addresses, allow_private)
    address = addresses[0]
    parts = urlsplit(url.strip())
    literal = f"[{address}]" if ":" in address else address
    target = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
    return Pinned(
        url=target,
        address=address,
        host=host,
        host_header=_host_header(host, parts.port),
        extensions={"sni_hostname": host} if parts.scheme == "https" else {},
    )
