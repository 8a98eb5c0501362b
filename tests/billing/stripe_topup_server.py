"""A loopback HTTP server speaking the part of Stripe's API that automatic top-up uses (Stripe
API reference: Customers, Checkout Sessions, PaymentIntents; "Idempotent requests"; errors):

- `POST /v1/customers` -> a customer (`cus_...`);
- `POST /v1/checkout/sessions` (form-encoded, `mode=setup`) -> a session with its `url`;
- `GET /v1/checkout/sessions/{id}` (`expand[]=setup_intent`) -> the session, `complete` once
  `complete(id)` was called, its SetupIntent expanded with the saved `payment_method`;
- `POST /v1/payment_intents` (`off_session=true&confirm=true`) -> `status: succeeded` with
  `amount_received`, or, while `decline` is set, HTTP 402 with a `card_error` body and the
  failed PaymentIntent, as Stripe answers an off-session decline. A repeated `Idempotency-Key`
  answers the first response (Stripe's replay), so `charges` counts real charges.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class StripeState:
    customers: list[dict] = field(default_factory=list)
    sessions: dict[str, dict] = field(default_factory=dict)
    charges: list[dict] = field(default_factory=list)  # PaymentIntents created (not replays)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    replies: dict[str, tuple[int, dict]] = field(default_factory=dict)  # idempotency key
    decline: str | None = None  # a decline code: card_declined, authentication_required ...
    down: bool = False  # answer 500 to PaymentIntents (the provider is failing)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def complete(self, session_id: str, payment_method: str = "pm_card_visa") -> None:
        self.sessions[session_id]["status"] = "complete"
        self.sessions[session_id]["_payment_method"] = payment_method


def _flatten(form: dict[str, list[str]]) -> dict:
    return {k: v if len(v) > 1 else v[0] for k, v in form.items()}


class _Handler(BaseHTTPRequestHandler):
    state: StripeState

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", "req_loopback")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        url = urlparse(self.path)
        query = _flatten(parse_qs(url.query))
        self.state.requests.append(("GET", url.path, query))
        if url.path.startswith("/v1/checkout/sessions/"):
            session = self.state.sessions.get(url.path.rsplit("/", 1)[1])
            if session is None:
                return self._send(404, _error("invalid_request_error", "No such checkout.session"))
            out = {k: v for k, v in session.items() if not k.startswith("_")}
            if session["status"] == "complete":
                intent = {
                    "id": f"seti_{session['id'][3:]}",
                    "object": "setup_intent",
                    "status": "succeeded",
                    "customer": session["customer"],
                    "payment_method": session["_payment_method"],
                    "usage": "off_session",
                }
                expanded = "setup_intent" in str(query.get("expand[]", query.get("expand[0]")))
                out["setup_intent"] = intent if expanded else intent["id"]
            return self._send(200, out)
        return self._send(404, _error("invalid_request_error", "Unrecognized request URL"))

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        form = _flatten(parse_qs(self.rfile.read(length).decode()))
        path = urlparse(self.path).path
        key = self.headers.get("Idempotency-Key")
        state = self.state
        with state.lock:
            state.requests.append(("POST", path, form))
            if key and (path, key) in state.replies:
                return self._send(*state.replies[(path, key)])
            status, body = self._answer(path, form)
            if key and status != 500:
                state.replies[(path, key)] = (status, body)
        return self._send(status, body)

    def _answer(self, path: str, form: dict) -> tuple[int, dict]:
        state = self.state
        if path == "/v1/customers":
            customer = {
                "id": f"cus_{len(state.customers) + 1:04d}",
                "object": "customer",
                "email": form.get("email"),
                "name": form.get("name"),
            }
            state.customers.append(customer)
            return 200, customer
        if path == "/v1/checkout/sessions":
            if form.get("mode") != "setup" or not form.get("customer"):
                return 400, _error("invalid_request_error", "mode setup and customer required")
            sid = f"cs_test_{len(state.sessions) + 1:04d}"
            session = {
                "id": sid,
                "object": "checkout.session",
                "mode": "setup",
                "status": "open",
                "customer": form["customer"],
                "success_url": form.get("success_url"),
                "cancel_url": form.get("cancel_url"),
                "url": f"https://checkout.stripe.test/c/setup/{sid}",
                "setup_intent": f"seti_{sid[3:]}",
            }
            state.sessions[sid] = session
            return 200, session
        if path == "/v1/payment_intents":
            if state.down:
                return 500, _error("api_error", "Something went wrong on Stripe's end.")
            if form.get("off_session") != "true" or form.get("confirm") != "true":
                return 400, _error("invalid_request_error", "off_session and confirm expected")
            number = len(state.charges) + 1
            intent = {
                "id": f"pi_{number:05d}",
                "object": "payment_intent",
                "amount": int(form["amount"]),
                "currency": form["currency"],
                "customer": form["customer"],
                "payment_method": form["payment_method"],
                "metadata": {
                    k[len("metadata[") : -1]: v
                    for k, v in form.items()
                    if k.startswith("metadata[")
                },
            }
            state.charges.append({**intent, "declined": bool(state.decline)})
            if state.decline:
                intent |= {"status": "requires_payment_method", "amount_received": 0}
                body = _error("card_error", "Your card was declined.", code=state.decline)
                body["error"] |= {
                    "decline_code": "insufficient_funds"
                    if state.decline == "card_declined"
                    else None,
                    "payment_intent": intent,
                    "charge": f"ch_{number:05d}",
                }
                return 402, body
            intent |= {"status": "succeeded", "amount_received": int(form["amount"])}
            return 200, intent
        return 404, _error("invalid_request_error", "Unrecognized request URL")


def _error(kind: str, message: str, code: str | None = None) -> dict:
    return {"error": {"type": kind, "message": message, "code": code}}


class StripeServer:
    def __init__(self):
        self.state = StripeState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StripeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def charges(self) -> list[dict]:
        return self.state.charges
