"""OpenRouter's `GET /api/v1/credits` on 127.0.0.1, speaking its documented contract (API
reference, "Get remaining credits"; the SDKs' error models):

- 200 `{"data": {"total_credits": number, "total_usage": number}}` for the management key;
- 401 `{"error": {"code": 401, "message": ...}}` without a key or for an unknown one;
- 403 for a key that may not read credits (an inference key);
- 500 `{"error": {"code": 500, "message": "Internal Server Error"}}` when told to fail.

The numbers are written into the JSON as given (strings of digits), so tests choose their exact
text. `delay` makes it wait before answering (a timeout); `body` replaces the 200 body (malformed
answers); `echo_key` puts the sent key into the 401 message."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MANAGEMENT_KEY = "sk-or-v1-" + "0123456789abcdef" * 4
INFERENCE_KEY = "sk-or-v1-" + "fedcba9876543210" * 4


class OpenRouter:
    def __init__(self, port: int = 0, start: bool = True):
        self.requests: list[dict] = []
        self.total_credits = "150.5"
        self.total_usage = "40.25"
        self.fail_with: int | None = None
        self.body: bytes | None = None
        self.delay = 0.0
        self.echo_key = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                auth = self.headers.get("authorization", "")
                server.requests.append({"path": self.path, "authorization": auth,
                                        "accept": self.headers.get("accept")})  # fmt: skip
                if server.delay:
                    time.sleep(server.delay)
                key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
                if self.path != "/api/v1/credits":
                    return self.reply(404, {"error": {"code": 404, "message": "Not Found"}})
                if not key:
                    return self.reply(
                        401, {"error": {"code": 401, "message": "No auth credentials found"}}
                    )
                if key not in (MANAGEMENT_KEY, INFERENCE_KEY):
                    said = f"User not found for key {key}" if server.echo_key else "User not found."
                    return self.reply(401, {"error": {"code": 401, "message": said}})
                if key == INFERENCE_KEY:
                    message = "Only management keys can perform this operation"
                    return self.reply(403, {"error": {"code": 403, "message": message}})
                if server.fail_with:
                    message = "Internal Server Error"
                    return self.reply(
                        server.fail_with, {"error": {"code": server.fail_with, "message": message}}
                    )
                if server.body is not None:
                    return self.send(200, server.body)
                text = (
                    f'{{"data": {{"total_credits": {server.total_credits}, '
                    f'"total_usage": {server.total_usage}}}}}'
                )
                return self.send(200, text.encode())

            def reply(self, status: int, document: dict):
                self.send(status, json.dumps(document).encode())

            def send(self, status: int, body: bytes):
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def log_message(self, *args):
                pass

        self._handler = Handler
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}/api/v1"
        self.server = None
        if start:
            self.start()

    def start(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
