"""Webhook delivery connects to the address it checked (DNS rebinding): the host is resolved once,
checked, and the request goes to that address with the host's name in `Host` and, for https, in
TLS (SNI and the certificate check). The outside world here is the system resolver,
`socket.getaddrinfo`, patched to answer differently on its second call, and to route a public
address to a loopback receiver (as the internet would route it to the real server); the
portal's own code is not mocked."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notifications.models import OutboxMessage
from notifications.services import notify, webhook_endpoint_create
from notifications.urlcheck import UrlRefused, pin_url
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db

PUBLIC = "93.184.215.14"  # what the name answers first: a public address, allowed
HOST = "hooks.rebind.test"


class Server:
    """An HTTP(S) receiver on `address`:`port` that records each request's Host header."""

    def __init__(self, address: str, port: int = 0, tls: ssl.SSLContext | None = None):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", 0)))
                server.requests.append({"host": self.headers.get("host")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((address, port), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rebinding_dns(monkeypatch):
    """The resolver: HOST answers PUBLIC the first time and 127.0.0.1 afterwards (the attacker
    rebinding the name to the inside); PUBLIC itself is routed to 127.0.0.2, where "the real
    receiver" listens. Other names resolve as usual. Records the names looked up."""
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


def _deliver(tenant, url: str, django_capture_on_commit_callbacks) -> OutboxMessage:
    webhook_endpoint_create(organization=tenant.org, url=url, events=["balance.low"], actor=SYSTEM)
    with django_capture_on_commit_callbacks(execute=True):
        notify(organization=tenant.org, type="balance.low", data={"available": "1"})
    return OutboxMessage.objects.get(channel="webhook")


def test_a_name_rebound_after_the_check_cannot_redirect_the_delivery(
    tenant, settings, rebinding_dns, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    real = Server("127.0.0.2")  # where PUBLIC leads
    inside = Server("127.0.0.1", real.port)  # where the rebound name would lead
    try:
        message = _deliver(
            tenant, f"http://{HOST}:{real.port}/x", django_capture_on_commit_callbacks
        )
    finally:
        real.close()
        inside.close()
    # Checked at creation (PUBLIC), then resolved once more at delivery, to 127.0.0.1 (private):
    # refused, and nothing was sent anywhere.
    assert rebinding_dns == [HOST, HOST]
    assert message.status == "failed" and "Refused" in message.last_error
    assert real.requests == [] and inside.requests == []


def test_the_delivery_connects_to_the_address_it_checked(
    tenant, settings, rebinding_dns, django_capture_on_commit_callbacks
):
    """Created with the private-network rule lifted (no resolution then); at delivery the name
    answers PUBLIC once, which is checked and connected to; the name's second answer (the
    inside) is never asked for."""
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    real = Server("127.0.0.2")  # where PUBLIC leads
    inside = Server("127.0.0.1", real.port)  # where the rebound name would lead
    try:
        url = f"http://{HOST}:{real.port}/x"
        webhook_endpoint_create(
            organization=tenant.org, url=url, events=["balance.low"], actor=SYSTEM
        )
        settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False  # the check at delivery is the real one
        with django_capture_on_commit_callbacks(execute=True):
            notify(organization=tenant.org, type="balance.low", data={"available": "1"})
        message = OutboxMessage.objects.get(channel="webhook")
    finally:
        real.close()
        inside.close()
    assert rebinding_dns == [HOST]  # resolved once: the check and the connection share it
    assert message.status == "delivered", message.last_error
    assert real.requests == [{"host": f"{HOST}:{real.port}"}]
    assert inside.requests == []


def _certificate(tmp_path, name: str) -> tuple[ssl.SSLContext, str]:
    """A self-signed certificate for `name` (server context, and the CA file to trust)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, str(cert_file)


def test_https_to_the_checked_address_verifies_the_hosts_certificate(
    tenant, settings, monkeypatch, rebinding_dns, tmp_path, django_capture_on_commit_callbacks
):
    """The request goes to the address, and TLS still names and verifies the host: a
    certificate for HOST is accepted; one for another name is not."""
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    context, ca_file = _certificate(tmp_path, HOST)
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # httpx trusts this CA (trust_env)
    server = Server("127.0.0.2", tls=context)
    try:
        message = _deliver(
            tenant, f"https://{HOST}:{server.port}/x", django_capture_on_commit_callbacks
        )
    finally:
        server.close()
    assert message.status == "delivered", message.last_error
    assert server.requests == [{"host": f"{HOST}:{server.port}"}]


def test_https_refuses_a_certificate_of_another_name(
    tenant, settings, monkeypatch, rebinding_dns, tmp_path, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    context, ca_file = _certificate(tmp_path, "someone-else.test")
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    server = Server("127.0.0.2", tls=context)
    try:
        message = _deliver(
            tenant, f"https://{HOST}:{server.port}/x", django_capture_on_commit_callbacks
        )
    finally:
        server.close()
    assert message.status != "delivered" and "CERTIFICATE_VERIFY_FAILED" in message.last_error
    assert server.requests == []


def test_pin_url_keeps_path_query_port_and_names_the_host(settings, monkeypatch):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *a, **k: [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:2800:21f:cb07::1", 8443, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, 8443)),
        ],
    )
    pinned = pin_url("https://Hooks.Example.com:8443/in/x?team=a")
    assert pinned.url == "https://[2606:2800:21f:cb07::1]:8443/in/x?team=a"
    assert pinned.host_header == "hooks.example.com:8443"
    assert pinned.extensions == {"sni_hostname": "hooks.example.com"}
    plain = pin_url("http://hooks.example.com")
    assert plain.url == "http://[2606:2800:21f:cb07::1]:80/" and plain.extensions == {}
    assert plain.host_header == "hooks.example.com"
    # One private answer among public ones refuses the URL.
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *a, **k: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, 80)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 80)),
        ],
    )
    with pytest.raises(UrlRefused):
        pin_url("http://hooks.example.com/x")
