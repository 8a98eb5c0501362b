"""A loopback model provider for the gateway tests, speaking OpenAI's chat completions contract
(`POST /chat/completions`, JSON or server-sent events with the usage in a final chunk when
`stream_options.include_usage` is asked) or, with `openrouter=True`, OpenRouter's (its `usage`
carries `cost`).

What it does per model id (`modes`, default "ok"): "ok" answers; "429" and "500" answer that
error; "timeout" sleeps `hang` seconds before answering; "drop" closes the connection without an
answer (streaming: after the first chunk); "nousage" answers without usage. With a `barrier`,
every stream waits after its first chunk until the barrier's number of streams are open at once.
HTTP/1.1 with keep-alive, as a provider's API: a JSON answer leaves its connection open for the
next request, a stream closes it."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROMPT_TOKENS = 21
CACHED_TOKENS = 5
COMPLETION_TOKENS = 7
REASONING_TOKENS = 2
WORDS = ["Hel", "lo", " wor", "ld"]


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the benchmark's bursts (bench/gateway.py)


class FakeUpstream:
    def __init__(self, *, openrouter: bool = False, address: str = "127.0.0.1", port: int = 0):
        self.openrouter = openrouter
        self.modes: dict[str, str] = {}
        self.cost = "0.000123"  # OpenRouter's usage.cost (credits)
        self.delay = 0.0  # seconds before every answer
        self.chunk_delay = 0.0  # seconds between streamed chunks
        self.hang = 5.0
        # Streams wait here after their first chunk, plain answers before theirs.
        self.barrier: threading.Barrier | None = None
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as a provider's API: answers carry their length, streams close after.
            # TCP_NODELAY: the head and the body are two writes, and the second would wait for
            # the client's delayed ACK (40 ms) on a kept-alive connection.
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                body = json.loads(raw)
                with fake.lock:
                    fake.requests.append(
                        {"path": self.path, "body": body, "headers": dict(self.headers)}
                    )
                try:
                    fake.answer(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the gateway went away (a client disconnect test)

            def log_message(self, *args):
                pass

        self.server = _Server((address, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def usage(self) -> dict:
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
            "completion_tokens_details": {"reasoning_tokens": REASONING_TOKENS},
        }
        if self.openrouter:
            usage["cost"] = float(self.cost)
        return usage

    def answer(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        mode = self.modes.get(body.get("model"), "ok")
        if self.delay:
            time.sleep(self.delay)
        if mode in ("429", "500"):
            payload = json.dumps({"error": {"message": "upstream says no", "code": int(mode)}})
            self._send(handler, int(mode), payload.encode(), "application/json")
            return
        if mode == "timeout":
            time.sleep(self.hang)
        if mode == "drop" and not body.get("stream"):
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        created = int(time.time())
        if not body.get("stream"):
            document = {
                "id": "chatcmpl-upstream-1",
                "object": "chat.completion",
                "created": created,
                "model": body["model"] + "-2024",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(WORDS)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": self.usage(),
                "system_fingerprint": "fp_fake",
            }
            if mode == "nousage":
                del document["usage"]
            if self.barrier is not None:
                self.barrier.wait()
            self._send(handler, 200, json.dumps(document).encode(), "application/json")
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")  # the stream ends with the connection
        handler.close_connection = True
        handler.end_headers()

        def event(document) -> None:
            handler.wfile.write(b"data: " + json.dumps(document).encode() + b"\n\n")
            handler.wfile.flush()

        base = {"id": "chatcmpl-upstream-1", "object": "chat.completion.chunk",
                "created": created, "model": body["model"] + "-2024"}  # fmt: skip
        handler.wfile.write(b": OPENROUTER PROCESSING\n\n")
        for i, word in enumerate(WORDS):
            delta = {"content": word} if i else {"role": "assistant", "content": word}
            event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            time.sleep(self.chunk_delay)
            if i == 0 and self.barrier is not None:
                try:
                    self.barrier.wait()
                except threading.BrokenBarrierError:
                    pass  # the test reads `barrier.broken`
            if mode == "drop":
                handler.close_connection = True
                handler.connection.shutdown(2)
                return
        event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if wants_usage and mode != "nousage":
            event({**base, "choices": [], "usage": self.usage()})
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()

    @staticmethod
    def _send(handler, status: int, payload: bytes, content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
