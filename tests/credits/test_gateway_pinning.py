"""The gateway connects to the address it checked (DNS rebinding), as webhook delivery does
(`notifications.urlcheck.pin_url`, the one rule): at every call the upstream's host is resolved
once, checked (unless `GATEWAY_ALLOW_PRIVATE_UPSTREAMS`), and the request goes to that address
with the host's name in `Host`. The outside world here is the system resolver,
`socket.getaddrinfo`, patched to answer differently on its second call and to route a public
address to a loopback fake upstream (as the internet would route it); the portal's own code is
not mocked."""

from __future__ import annotations

import socket
from decimal import Decimal

import pytest

from credits import gateway
from credits.models import Hold, LedgerAccount
from credits.services.upstreams import upstream_create
from tests.conftest import SYSTEM

from .fake_upstream import FakeUpstream

pytestmark = pytest.mark.django_db

PUBLIC = "93.184.215.14"  # what the name answers first: a public address, allowed
HOST = "llm.rebind.test"
MESSAGES = [{"role": "user", "content": "Say hello, in four tokens."}]


@pytest.fixture
def rebinding_dns(monkeypatch):
    """HOST answers PUBLIC the first time and 127.0.0.1 afterwards (the attacker rebinding the
    name to the inside); PUBLIC itself is routed to 127.0.0.2, where "the real upstream" listens.
    Records the names looked up."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        if name == HOST:
            lookups.append(name)
            ip = PUBLIC if lookups.count(HOST) == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        if name == PUBLIC:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port))]
        return real(host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


@pytest.fixture
def servers():
    """The real upstream (where PUBLIC leads) and the inside one on the same port (where the
    rebound name would lead)."""
    real = FakeUpstream(address="127.0.0.2")
    inside = FakeUpstream(address="127.0.0.1", port=real.server.server_address[1])
    yield real, inside
    real.close()
    inside.close()


def _upstream(tenant, port: int):
    return upstream_create(
        organization=tenant.org,
        name="rebind",
        kind="openai_compatible",
        base_url=f"http://{HOST}:{port}/v1",
        models=["gpt-4o"],
        api_key="sk-upstream-secret",
        timeout=5,
        actor=SYSTEM,
    )


def _chat(tenant):
    _, secret = tenant.key("usage", team=None)
    body = {"messages": MESSAGES, "model": "gpt-4o", "max_tokens": 50}
    return tenant.client(secret).post("/api/v1/chat/completions", body, format="json")


def test_a_name_rebound_after_the_check_cannot_redirect_the_call(
    tenant, settings, prices, rebinding_dns, servers
):
    real, inside = servers
    settings.GATEWAY_ALLOW_PRIVATE_UPSTREAMS = False
    tenant.grant("10")
    _upstream(tenant, real.server.server_address[1])  # checked: the name answers PUBLIC
    response = _chat(tenant)  # resolved again: 127.0.0.1 now, refused
    assert rebinding_dns == [HOST, HOST]
    assert response.status_code == 502, response.content
    assert response.json()["error"]["metadata"]["type"] == "upstream_error"
    assert real.requests == [] and inside.requests == []
    assert Hold.objects.get(organization=tenant.org).status == Hold.Status.VOIDED
    pool = LedgerAccount.objects.get(organization=tenant.org, kind=LedgerAccount.Kind.POOL)
    assert pool.balance == Decimal("10") and pool.held == 0


def test_the_call_connects_to_the_address_it_checked(
    tenant, settings, prices, rebinding_dns, servers
):
    """Saved with the private-address rule lifted (no resolution then); at the call the name
    answers PUBLIC once, which is checked and connected to, with the name in `Host`; the
    name's second answer (the inside) is never asked for."""
    real, inside = servers
    port = real.server.server_address[1]
    tenant.grant("10")
    _upstream(tenant, port)
    settings.GATEWAY_ALLOW_PRIVATE_UPSTREAMS = False  # the check at the call is the real one
    response = _chat(tenant)
    assert response.status_code == 200, response.content
    assert rebinding_dns == [HOST]  # resolved once: the check and the connection share it
    assert len(real.requests) == 1 and inside.requests == []
    sent = real.requests[0]
    assert sent["headers"]["Host"] == f"{HOST}:{port}"
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer sk-upstream-secret"


def test_allowing_private_upstreams_still_pins_the_call(
    tenant, settings, prices, rebinding_dns, servers
):
    """Under GATEWAY_ALLOW_PRIVATE_UPSTREAMS the address rule is lifted but the call is still
    pinned: each call resolves the name once and connects where that answer leads."""
    real, inside = servers
    tenant.grant("10")
    _upstream(tenant, real.server.server_address[1])
    assert _chat(tenant).status_code == 200  # PUBLIC: the real upstream
    assert _chat(tenant).status_code == 200  # 127.0.0.1 now, allowed: the inside one
    assert rebinding_dns == [HOST, HOST]
    assert len(real.requests) == 1 and len(inside.requests) == 1


def test_one_pooled_client_per_upstream_origin():
    """Connections are pooled per origin: the same client for every URL of a host, another for
    another host (a TLS connection verified for one name never carries another's request)."""
    a = gateway.upstream_client("https://api.example.com/v1/chat/completions")
    assert gateway.upstream_client("https://API.example.com/other") is a
    assert gateway.upstream_client("https://api.example.org/v1/chat/completions") is not a
    assert gateway.upstream_client("https://api.example.com:8443/v1") is not a
