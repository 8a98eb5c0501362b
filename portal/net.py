"""The client's IP address, the one way every part of the portal reads it (audit log, throttles,
login lockouts).

`X-Forwarded-For` is trusted only behind `TRUSTED_PROXY_COUNT` proxies (setting, from the
environment, default 0). Each proxy appends the address it received the request from, so with N
trusted proxies the client is the Nth address from the right; anything to its left was written by
the client and may be forged. With 0, or when the header is missing, too short or not an IP
address there, the address is `REMOTE_ADDR`. Never raises: an unusable address is None.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def parse_ip(value: str | None) -> str | None:
    """`value` as a normalized IPv4 or IPv6 address, or None when it is not one (ports, zone
    ids, host names and garbage included)."""
    if not value or not isinstance(value, str):
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if getattr(address, "scope_id", None):  # fe80::1%eth0: PostgreSQL's inet refuses zone ids
        return None
    return str(address)


def client_ip(request: HttpRequest) -> str | None:
    """The client's address (see the module docstring)."""
    meta = getattr(request, "META", {})
    remote = parse_ip(meta.get("REMOTE_ADDR"))
    proxies = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if proxies <= 0:
        return remote
    hops = [hop.strip() for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    hops = [hop for hop in hops if hop]
    if len(hops) < proxies:
        return remote
    return parse_ip(hops[-proxies]) or remote
