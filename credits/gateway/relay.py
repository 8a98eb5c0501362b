"""The answer: a non-streaming completion (`chat_complete`), or the upstream's server-sent events
relayed chunk by chunk (`chat_stream` under WSGI, `chat_stream_async` on the event loop), both
through one `_Relay`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator

import httpx
from asgiref.sync import sync_to_async
from rest_framework.utils.encoders import JSONEncoder

from portal.errors import (
    ApplicationError,
)

from .charge import _capture, _usage_out, chat_void
from .request import Held, _bytes
from .upstream import UpstreamFailed, UpstreamTimeout, upstream_send

logger = logging.getLogger(__name__)


def chat_complete(held: Held) -> dict:
    """A non-streaming request: send, capture, and answer the upstream's completion with the
    generation id, the model served and `usage.cost`. Raises UpstreamFailed, UpstreamTimeout
    (the hold is voided)."""
    try:
        response = upstream_send(held)
        try:
            document = json.loads(response.read())
        finally:
            response.close()
        if not isinstance(document, dict) or not isinstance(document.get("choices"), list):
            raise UpstreamFailed("The upstream's answer is not a chat completion.")
    except httpx.TimeoutException:
        chat_void(held)
        raise UpstreamTimeout("The upstream timed out while answering.") from None
    except (httpx.HTTPError, ValueError):
        chat_void(held)
        raise UpstreamFailed("The upstream dropped the connection or sent invalid JSON.") from None
    except ApplicationError:
        chat_void(held)
        raise
    usage = document.get("usage")
    # Without usage (a server that omits it): the prompt bound and the bytes of the answer.
    cost = _capture(held, usage, _message_bytes(document["choices"]))
    document.update(
        {
            "id": held.generation_id,
            "model": held.candidate.model,
            "object": "chat.completion",
            "usage": _usage_out(usage, cost),
        }
    )
    document.setdefault("created", int(time.time()))
    document.setdefault("system_fingerprint", None)
    return document


def _sse(document: dict) -> bytes:
    return (
        b"data: " + json.dumps(document, separators=(",", ":"), cls=JSONEncoder).encode() + b"\n\n"
    )


def _message_bytes(choices) -> int:
    """UTF-8 bytes of the text, reasoning and tool calls of a completion's messages."""
    return _streamed_bytes([{"delta": c.get("message")} for c in choices if isinstance(c, dict)])


def _streamed_bytes(choices) -> int:
    """UTF-8 bytes of the text, reasoning and tool calls in a chunk's deltas."""
    total = 0
    for choice in choices if isinstance(choices, list) else []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict):
            for key in ("content", "reasoning", "refusal"):
                if isinstance(delta.get(key), str):
                    total += len(delta[key].encode())
            if delta.get("tool_calls") is not None:
                total += _bytes(delta["tool_calls"])
    return total


class _Relay:
    """One stream's state between the upstream's server-sent events and the client's, shared by
    the synchronous (WSGI) and asynchronous (ASGI) drivers: each upstream line becomes at most
    one chunk with the generation id and the model served; the first usage chunk is captured."""

    def __init__(self, held: Held):
        self.held = held
        self.created = int(time.time())
        self.streamed = 0  # UTF-8 bytes of text, reasoning and tool calls sent
        self.captured = False
        self.done = False  # the upstream's `[DONE]`
        self.failure: tuple[type[ApplicationError], str] | None = None

    def chunk(self, line: str) -> dict | None:
        """The chunk of an upstream line, or None (comments, event names, `[DONE]`, not JSON)."""
        if not line.startswith("data:"):
            return None  # comments (": keep-alive"), event names
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return None
        try:
            chunk = json.loads(data)
        except ValueError:
            return None
        if not isinstance(chunk, dict):
            return None
        chunk.update({"id": self.held.generation_id, "model": self.held.candidate.model})
        chunk.setdefault("object", "chat.completion.chunk")
        chunk.setdefault("created", self.created)
        chunk.setdefault("choices", [])
        self.streamed += _streamed_bytes(chunk["choices"])
        if "usage" in chunk and chunk["usage"] is None:
            del chunk["usage"]
        return chunk

    def usage(self, chunk: dict) -> dict | None:
        """The usage to capture, when `chunk` is the first that reports it."""
        usage = chunk.get("usage")
        if isinstance(usage, dict) and not self.captured:
            self.captured = True
            return usage
        return None

    def capture_rest(self) -> None:
        """At the end: a stream that reported no usage is charged its estimate (prompt bound plus
        the bytes streamed). Never raises: the stream is over."""
        if self.captured:
            return
        self.captured = True
        try:
            _capture(self.held, None, self.streamed)
        except ApplicationError:  # e.g. the excess over an expired hold is not available
            logger.exception("gateway: capture of %s failed", self.held.generation_id)

    def ended(self) -> None:
        if not self.done and self.failure is None:  # the connection closed before the end
            self.failure = (UpstreamFailed, "The upstream dropped the connection mid-stream.")

    def failed(self, exc: httpx.HTTPError) -> None:
        if isinstance(exc, httpx.TimeoutException):
            self.failure = (UpstreamTimeout, "The upstream timed out mid-stream.")
        else:
            self.failure = (UpstreamFailed, "The upstream dropped the connection mid-stream.")

    def tail(self) -> Iterator[bytes]:
        """OpenRouter's error chunk when the upstream failed mid-stream, then `[DONE]`."""
        if self.failure is not None:
            error, message = self.failure
            yield _sse(
                {
                    "id": self.held.generation_id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.held.candidate.model,
                    "choices": [],
                    "error": {
                        "code": error.status_code,
                        "message": message,
                        "metadata": {"error_type": "provider_unavailable"},
                    },
                }
            )
        yield b"data: [DONE]\n\n"


def chat_stream(held: Held, response: httpx.Response) -> Iterator[bytes]:
    """Server-sent events of an open upstream stream, chunk by chunk as they come, each with the
    generation id and the model served; the usage chunk gets `usage.cost` once captured. When
    the stream ends without usage (upstream dropped, timed out, or the client went away and the
    server closed this generator), the hold is captured at the prompt bound plus the bytes
    streamed; an upstream failure mid-stream ends with an error chunk (OpenRouter's)."""
    relay = _Relay(held)
    try:
        for line in response.iter_lines():
            chunk = relay.chunk(line)
            if relay.done:
                break
            if chunk is None:
                continue
            if (usage := relay.usage(chunk)) is not None:
                chunk["usage"] = _usage_out(usage, _capture(held, usage))
            yield _sse(chunk)
        relay.ended()
    except httpx.HTTPError as exc:
        relay.failed(exc)
    finally:
        response.close()
        relay.capture_rest()
    yield from relay.tail()


async def chat_stream_async(held: Held, response: httpx.Response) -> AsyncIterator[bytes]:
    """`chat_stream` on the event loop (the ASGI server): the same chunks, capture and errors;
    the ledger work runs in the request's thread (`sync_to_async`), so an open stream holds no
    worker and no thread while it waits for the upstream. A client that disconnects cancels
    this generator; the capture of what was streamed still runs."""
    relay = _Relay(held)
    try:
        async for line in response.aiter_lines():
            chunk = relay.chunk(line)
            if relay.done:
                break
            if chunk is None:
                continue
            if (usage := relay.usage(chunk)) is not None:
                cost = await sync_to_async(_capture)(held, usage)
                chunk["usage"] = _usage_out(usage, cost)
            yield _sse(chunk)
        relay.ended()
    except httpx.HTTPError as exc:
        relay.failed(exc)
    finally:
        # Shielded: a disconnect cancels the response task, and the capture must still finish.
        await asyncio.shield(_close_and_capture(response, relay))
    for part in relay.tail():
        yield part


async def _close_and_capture(response: httpx.Response, relay: _Relay) -> None:
    try:
        await response.aclose()
    finally:
        await sync_to_async(relay.capture_rest)()
