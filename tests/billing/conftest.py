"""Loopback servers speaking the payment providers' documented HTTP contracts, and the signed
webhook requests the providers send.

- Stripe (API reference): `POST /v1/checkout/sessions` (form-encoded, bracketed keys, bearer
  secret key, `Idempotency-Key`: a repeated key answers the first session) answers a Checkout
  Session with `id` and `url`; `POST /v1/refunds` refunds (part of) a PaymentIntent. Webhooks
  are signed `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
- Coinbase Commerce: `POST /charges` (JSON, `X-CC-Api-Key`, `X-CC-Version: 2018-03-22`) answers
  201 `{"data": {"id", "code", "hosted_url", "pricing": {"local": ...}, ...}}`. Webhooks are
  signed `X-CC-Webhook-Signature: <hex HMAC-SHA256(secret, body)>`.

Each server can answer an error status (`fail_with`), sleep past the client's timeout (`hang`),
or be closed (connection refused).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest

STRIPE_KEY = "sk_test_portal"
STRIPE_WEBHOOK_SECRET = "whsec_test_portal"
COINBASE_KEY = "cc-test-key"
COINBASE_WEBHOOK_SECRET = "cc-webhook-secret"


class Loopback:
    """A threaded HTTP server on 127.0.0.1 that hands each request to `handle(method, path,
    headers, body) -> (status, dict)`; `fail_with`, `hang` and `close()` simulate outages."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail_with: int | None = None
        self.hang = 0.0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server.lock:
                    server.requests.append(
                        {"method": self.command, "path": self.path, "headers": headers}
                    )
                if server.hang:
                    time.sleep(server.hang)
                if server.fail_with:
                    status, reply = server.fail_with, {"error": {"message": "Server error"}}
                else:
                    with server.lock:
                        status, reply = server.handle(self.command, self.path, headers, body)
                html = isinstance(reply, str)
                data = reply.encode() if html else json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "text/html" if html else "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = _serve  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, method, path, headers, body) -> tuple[int, dict]:
        raise NotImplementedError

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _brackets(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's form encoding (`a[b][0][c]=v`) back into nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(node):
        if isinstance(node, dict):
            if node and all(k.isdigit() for k in node):
                return [lists(node[k]) for k in sorted(node, key=int)]
            return {k: lists(v) for k, v in node.items()}
        return node

    return lists(root)


class Stripe(Loopback):
    """Stripe's Checkout Sessions and Refunds, as far as the portal uses them."""

    def __init__(self):
        self.sessions: dict[str, dict] = {}
        self.by_key: dict[str, str] = {}
        self.refunds: dict[str, int] = {}  # PaymentIntent -> cents refunded
        super().__init__()

    def handle(self, method, path, headers, body):
        if method == "GET" and path.startswith("/c/pay/"):  # the hosted page the buyer sees
            session = self.sessions.get(path.rsplit("/", 1)[-1])
            if session is None:
                return 404, "<!doctype html><title>Not found</title>"
            amount = f"{session['amount_total'] / 100:.2f}"
            return 200, (
                "<!doctype html><html lang=en><title>Stripe Checkout (test)</title>"
                f"<h1>Pay ${amount}</h1><p>Order {session['client_reference_id']}</p></html>"
            )
        if headers.get("authorization") != f"Bearer {STRIPE_KEY}":
            return 401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key"}}
        params = _brackets(parse_qsl(body.decode(), keep_blank_values=True))
        if method == "POST" and path == "/v1/checkout/sessions":
            key = headers.get("idempotency-key")
            if key in self.by_key:
                return 200, self.sessions[self.by_key[key]]
            if params.get("mode") != "payment" or "line_items" not in params:
                return 400, {"error": {"type": "invalid_request_error", "message": "mode"}}
            item = params["line_items"][0]
            session_id = f"cs_test_{uuid.uuid4().hex}"
            session = {
                "id": session_id,
                "object": "checkout.session",
                "url": f"{self.base}/c/pay/{session_id}",
                "mode": "payment",
                "status": "open",
                "payment_status": "unpaid",
                "client_reference_id": params.get("client_reference_id"),
                "metadata": params.get("metadata", {}),
                "amount_total": int(item["price_data"]["unit_amount"]) * int(item["quantity"]),
                "currency": item["price_data"]["currency"],
                "success_url": params.get("success_url"),
                "cancel_url": params.get("cancel_url"),
                "expires_at": int(params.get("expires_at", 0)),
                "payment_intent": None,
                "_params": params,
            }
            self.sessions[session_id] = session
            if key:
                self.by_key[key] = session_id
            return 200, session
        if method == "POST" and path == "/v1/refunds":
            intent = params.get("payment_intent")
            amount = int(params["amount"])
            self.refunds[intent] = self.refunds.get(intent, 0) + amount
            refund = {
                "id": f"re_{uuid.uuid4().hex[:16]}",
                "object": "refund",
                "amount": amount,
                "payment_intent": intent,
                "status": "succeeded",
                "currency": "usd",
            }
            return 200, refund
        return 404, {"error": {"type": "invalid_request_error", "message": "Unrecognized URL"}}

    def last_session(self) -> dict:
        return list(self.sessions.values())[-1]


class Coinbase(Loopback):
    """Coinbase Commerce's charges."""

    def __init__(self):
        self.charges: dict[str, dict] = {}
        super().__init__()

    def handle(self, method, path, headers, body):
        if headers.get("x-cc-api-key") != COINBASE_KEY:
            return 401, {"error": {"type": "authorization_error", "message": "No such API key."}}
        if headers.get("x-cc-version") != "2018-03-22":
            return 400, {"error": {"type": "invalid_request", "message": "X-CC-Version"}}
        if method == "POST" and path == "/charges":
            data = json.loads(body)
            if data.get("pricing_type") != "fixed_price" or "local_price" not in data:
                return 400, {"error": {"type": "invalid_request", "message": "local_price"}}
            code = uuid.uuid4().hex[:8].upper()
            charge = {
                "id": str(uuid.uuid4()),
                "code": code,
                "hosted_url": f"https://commerce.coinbase.test/pay/{code}",
                "name": data.get("name"),
                "pricing_type": "fixed_price",
                "pricing": {"local": data["local_price"]},
                "metadata": data.get("metadata", {}),
                "redirect_url": data.get("redirect_url"),
                "cancel_url": data.get("cancel_url"),
                "timeline": [{"status": "NEW", "time": "2026-11-30T00:00:00Z"}],
                "payments": [],
            }
            self.charges[code] = charge
            return 201, {"data": charge, "warnings": []}
        return 404, {"error": {"type": "not_found", "message": "Not found"}}

    def last_charge(self) -> dict:
        return list(self.charges.values())[-1]


@pytest.fixture
def stripe_server(settings):
    server = Stripe()
    settings.STRIPE_SECRET_KEY = STRIPE_KEY
    settings.STRIPE_WEBHOOK_SECRET = STRIPE_WEBHOOK_SECRET
    settings.STRIPE_API_BASE = server.base
    settings.PAYMENT_PROVIDER_TIMEOUT_SECONDS = 2
    settings.PAYMENT_PROVIDER_RETRIES = 1
    yield server
    server.close()


@pytest.fixture
def coinbase_server(settings):
    server = Coinbase()
    settings.COINBASE_COMMERCE_API_KEY = COINBASE_KEY
    settings.COINBASE_COMMERCE_WEBHOOK_SECRET = COINBASE_WEBHOOK_SECRET
    settings.COINBASE_COMMERCE_API_BASE = server.base
    settings.PAYMENT_PROVIDER_TIMEOUT_SECONDS = 2
    settings.PAYMENT_PROVIDER_RETRIES = 1
    yield server
    server.close()


# Signed webhook requests ---------------------------------------------------------------------


def stripe_signed(event: dict, *, secret: str = STRIPE_WEBHOOK_SECRET, at: int | None = None):
    """(body, Stripe-Signature) as Stripe signs a delivery."""
    body = json.dumps(event)
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return body.encode(), f"t={t},v1={mac}"


def stripe_event(type_: str, obj: dict, event_id: str | None = None) -> dict:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2025-01-27.acacia",
        "created": int(time.time()),
        "type": type_,
        "livemode": False,
        "data": {"object": obj},
    }


def session_completed(session: dict, **changes) -> dict:
    """The Checkout Session object of `checkout.session.completed` once paid."""
    obj = {k: v for k, v in session.items() if not k.startswith("_")}
    obj.update(status="complete", payment_status="paid", payment_intent=f"pi_{session['id'][-20:]}")
    obj.update(changes)
    return obj


def coinbase_signed(body: dict, *, secret: str = COINBASE_WEBHOOK_SECRET):
    raw = json.dumps(body).encode()
    return raw, hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def coinbase_event(type_: str, charge: dict, event_id: str | None = None) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "scheduled_for": "2026-11-30T00:00:00Z",
        "attempt_number": 1,
        "event": {
            "id": event_id or str(uuid.uuid4()),
            "resource": "event",
            "type": type_,
            "api_version": "2018-03-22",
            "created_at": "2026-11-30T00:00:00Z",
            "data": charge,
        },
    }


def charge_paid(charge: dict) -> dict:
    """The charge of `charge:confirmed`: one confirmed payment of its local price."""
    local = charge["pricing"]["local"]
    return {
        **charge,
        "timeline": [*charge["timeline"], {"status": "COMPLETED"}],
        "payments": [
            {
                "network": "base",
                "transaction_id": "0xabc",
                "status": "CONFIRMED",
                "value": {
                    "local": dict(local),
                    "crypto": {"amount": local["amount"], "currency": "USDC"},
                },
            }
        ],
    }
