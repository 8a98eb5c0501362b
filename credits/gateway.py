"""The credit-aware gateway: `POST /api/v1/chat/completions` forwarded to the organization's
upstreams, with the worst case held before a token is bought and the actual cost captured after.

The request path (docs/api.md, "Gateway"):

1. `chat_parse`: validate the body (OpenAI's and OpenRouter's chat request: `model`, `models`,
   `route: "fallback"`, `messages`, `max_tokens` / `max_completion_tokens`, `stream`, `user`,
   `session_id`) and every candidate model: known to the price table, served by an upstream,
   `max_tokens` within the model's context window. Any failure is a 400 and nothing is held.
2. `chat_hold`: hold the worst case with the metering path's `authorization_create` (balance,
   every budget and the key's limit, checked and reserved in one step): the prompt's upper bound
   (`prompt_bound`: UTF-8 bytes, never fewer than its tokens) plus the output bound (`max_tokens`,
   else the model's context window), at the model's price. When it cannot be held, the next
   candidate (`models` list) is tried; none: the first refusal (402) is raised.
3. Call the upstream over a pooled httpx client (`upstream_client`), connected to the address
   its host was checked at (`notifications.urlcheck.pin_url`), retrying connection
   errors only, the upstream's timeout), asking for the final usage chunk when streaming.
   Under the ASGI server a stream is relayed on the event loop (`upstream_send_async`,
   `chat_stream_async`: httpx's async client); under WSGI by the request's thread
   (`upstream_send`, `chat_stream`). Both drive the one `_Relay`.
4. `chat_capture`: capture the actual cost with `authorization_capture` (the one metering path:
   it records the usage event and posts its cost): an OpenRouter upstream's `usage.cost` as
   reported, else the price table prices the reported usage. Upstream errors and timeouts void
   the hold (502 / 504). A stream that ends without usage (client gone, upstream dropped) is
   charged the prompt bound plus the UTF-8 bytes of what was streamed. When the database cannot
   be reached at that moment (no pooled connection within `DATABASE_POOL_TIMEOUT`, a dropped
   connection), the answer goes out without `usage.cost` and the capture is retried in the
   background (`_capture`): the tokens are bought, so they are charged once the database
   answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.utils.encoders import JSONEncoder

from notifications.urlcheck import UrlRefused, pin_url
from portal.errors import (
    DATABASE_UNAVAILABLE,
    ApplicationError,
    BudgetExceeded,
    InsufficientCredits,
    PermissionDenied,
    ValidationFailed,
)
from portal.money import parse_credits

from .models import Hold, Upstream
from .services.holds import HoldNotPending, hold_void
from .services.prices import model_context_window, price_for
from .services.upstreams import upstream_for
from .services.usage import (
    Attribution,
    UsageInput,
    authorization_capture,
    authorization_create,
    usage_record,
)

logger = logging.getLogger(__name__)

# Tokens a message costs beyond its content (role and framing tokens: OpenAI counts 3 to 4), and
# the reply's priming; a bound per image part (a high-detail image is at most about 1,600 tokens
# at the providers that publish their image token counts).
MESSAGE_OVERHEAD_TOKENS = 8
REPLY_OVERHEAD_TOKENS = 8
IMAGE_PART_TOKENS = 2_000
MAX_CANDIDATES = 10
HOLD_TIMEOUT = timedelta(minutes=30)  # the backstop: a stream longer than this pays by debit
CONNECT_TIMEOUT = 10.0  # seconds, at most the upstream's own timeout
# Seconds before each retry of a capture the database could not take (`_capture`): about
# 35 minutes in all, past HOLD_TIMEOUT (a capture after the hold expired is a plain debit).
CAPTURE_RETRY_DELAYS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 960)

# Pooled clients, one per upstream origin (scheme, host, port) and process (connection reuse
# across requests); `retries` retries failed connection attempts only (httpx's transport), never
# a request that reached the upstream. A request goes to the address its host was checked at
# (`pin_url`, DNS rebinding), so a client's pool is keyed by address: one client per origin
# keeps a TLS connection made (and verified) for one host name from serving another name that
# resolves to the same address.
_CLIENTS: dict[tuple[str, str, int | None], httpx.Client] = {}
_CLIENTS_LOCK = threading.Lock()
_CLIENT_OPTIONS = {
    "limits": httpx.Limits(max_connections=200, max_keepalive_connections=50),
    "follow_redirects": False,
}


def upstream_client(url: str) -> httpx.Client:
    """The pooled client of `url`'s origin (created on first use, kept for the process)."""
    key = _client_key(url)
    client = _CLIENTS.get(key)
    if client is None:
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                client = _CLIENTS[key] = httpx.Client(
                    transport=httpx.HTTPTransport(retries=2), **_CLIENT_OPTIONS
                )
    return client


# The ASGI server's clients: one `httpx.AsyncClient` per origin and event loop (an async client is
# bound to the loop it first ran on).
_ASYNC_CLIENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _client_key(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (parts.scheme, (parts.hostname or "").lower(), parts.port)


def upstream_async_client(url: str) -> httpx.AsyncClient:
    """The pooled async client of `url`'s origin on the running event loop (created on first
    use, kept while the loop lives); the same pooling and retries as `upstream_client`."""
    clients = _ASYNC_CLIENTS.setdefault(asyncio.get_running_loop(), {})
    key = _client_key(url)
    client = clients.get(key)
    if client is None:
        client = clients[key] = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(retries=2), **_CLIENT_OPTIONS
        )
    return client


class UpstreamFailed(ApplicationError):
    """502: the upstream answered an error, dropped the connection, or sent what is not its
    contract."""

    status_code = 502
    type = "upstream_error"


class UpstreamTimeout(ApplicationError):
    """504: the upstream did not answer within its timeout."""

    status_code = 504
    type = "upstream_timeout"


@dataclass
class Candidate:
    model: str
    upstream: Upstream
    max_output: int


@dataclass
class ChatRequest:
    """A validated chat request: the body to forward, and the candidates in order."""

    body: dict
    candidates: list[Candidate]
    stream: bool
    prompt_bound: int
    user: str
    session_id: str


@dataclass
class Held:
    """A request whose worst case is held for `candidate`."""

    request: ChatRequest
    candidate: Candidate
    hold: Hold
    generation_id: str
    started: float = field(default_factory=time.monotonic)


def _bytes(value) -> int:
    if isinstance(value, str):
        return len(value.encode())
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def prompt_bound(body: dict) -> int:
    """An upper bound on the prompt's tokens without a tokenizer: every token of text is at least
    one UTF-8 byte, so the bytes of each message's content (text parts; other parts as JSON,
    images at IMAGE_PART_TOKENS), name and tool calls, plus framing per message, plus the JSON of
    `tools` / `functions` / `response_format` when given."""
    total = REPLY_OVERHEAD_TOKENS
    for message in body["messages"]:
        total += MESSAGE_OVERHEAD_TOKENS
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    total += _bytes(part.get("text") or "")
                elif isinstance(part, dict) and part.get("type") == "image_url":
                    total += IMAGE_PART_TOKENS
                else:
                    total += _bytes(part)
        elif content is not None:
            total += _bytes(content)
        for key in ("name", "tool_calls", "function_call", "tool_call_id"):
            if message.get(key) is not None:
                total += _bytes(message[key])
    for key in ("tools", "functions", "response_format", "tool_choice"):
        if body.get(key) is not None:
            total += _bytes(body[key])
    return total


def _positive_int(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationFailed({name: ["A positive whole number of tokens."]})
    return value


def _text(body: dict, name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 255:
        raise ValidationFailed({name: ["A string of at most 255 characters."]})
    return value


def chat_parse(*, organization_id: int, body) -> ChatRequest:
    """Validate a chat request and resolve its candidates (`model`, then the `models` list, as
    OpenRouter's model routing). Raises ValidationFailed (400): not an object, `messages` not a
    non-empty list of objects, no model, an unknown model (not in the price table), a model no
    enabled upstream serves, `max_tokens` beyond the model's context window, or no output bound
    (no `max_tokens` and the model's window is unknown)."""
    if not isinstance(body, dict):
        raise ValidationFailed({"non_field_errors": ["Expected a JSON object."]})
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValidationFailed({"messages": ["A non-empty list of messages."]})
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise ValidationFailed({"messages": ["Each message is an object with a `role`."]})
    models = body.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) and m for m in models)
    ):
        raise ValidationFailed({"models": ["A list of model ids."]})
    route = body.get("route")
    if route is not None and route != "fallback":
        raise ValidationFailed({"route": ["Only 'fallback'."]})
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise ValidationFailed({"model": ["A model id."]})
    names = list(dict.fromkeys(([model] if model else []) + (models or [])))
    if not names:
        raise ValidationFailed({"model": ["Name a model (or a `models` list)."]})
    if len(names) > MAX_CANDIDATES:
        raise ValidationFailed({"models": [f"At most {MAX_CANDIDATES} models."]})
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ValidationFailed({"stream": ["true or false."]})
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    now = timezone.now()
    candidates = []
    for name in names:
        field_name = "model" if name == model else "models"
        if price_for(name, now) is None:
            raise ValidationFailed(
                {field_name: [f"Unknown model '{name}': it is not in the price table."]},
                message=f"Unknown model '{name}'.",
            )
        upstream = upstream_for(organization_id=organization_id, model=name)
        if upstream is None:
            raise ValidationFailed(
                {field_name: [f"No upstream of this organization serves '{name}'."]},
                message=f"No upstream serves '{name}'.",
            )
        window = model_context_window(name)
        if max_tokens is not None and window is not None and max_tokens > window:
            raise ValidationFailed(
                {"max_tokens": [f"At most {window} for '{name}' (its context window)."]}
            )
        if max_tokens is None and window is None:
            raise ValidationFailed(
                {"max_tokens": [f"Give max_tokens: the maximum output of '{name}' is unknown."]}
            )
        candidates.append(Candidate(name, upstream, max_tokens or window))
    return ChatRequest(
        body=body,
        candidates=candidates,
        stream=stream,
        prompt_bound=prompt_bound(body),
        user=_text(body, "user"),
        session_id=_text(body, "session_id"),
    )


def chat_hold(*, attribution: Attribution, request: ChatRequest) -> Held:
    """Hold the worst case of the first candidate the credits allow (in the order of the
    request). Raises the first candidate's refusal when none can be held: InsufficientCredits,
    BudgetExceeded (402), PermissionDenied (a guardrail refuses every candidate)."""
    generation_id = f"gen-{uuid.uuid4().hex}"
    first_refusal = None
    for candidate in request.candidates:
        try:
            hold, _ = authorization_create(
                attribution=attribution,
                id=generation_id,
                model=candidate.model,
                prompt_tokens=request.prompt_bound,
                max_tokens=candidate.max_output,
                timeout=HOLD_TIMEOUT,
            )
        except (InsufficientCredits, BudgetExceeded, PermissionDenied) as refusal:
            first_refusal = first_refusal or refusal
            continue
        return Held(request, candidate, hold, generation_id)
    raise first_refusal


def _upstream_body(held: Held) -> dict:
    body = {
        k: v
        for k, v in held.request.body.items()
        if k not in ("models", "route", "session_id", "provider", "transforms", "usage")
    }
    body["model"] = held.candidate.model
    if held.request.stream:
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                  "include_usage": True}  # fmt: skip
    if held.candidate.upstream.kind == Upstream.Kind.OPENROUTER:
        body["usage"] = {"include": True}  # OpenRouter's usage accounting: `usage.cost`
    return body


def _headers(upstream: Upstream) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key = upstream.api_key
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _upstream_request(held: Held) -> tuple[str, dict]:
    """The URL and `build_request` arguments of the call to the candidate's upstream
    (`<base_url>/chat/completions`), connected to the address its host is checked at now.
    Raises UpstreamFailed (502) when the address is refused."""
    upstream = held.candidate.upstream
    url = f"{upstream.base_url}/chat/completions"
    try:
        # Checked again now (DNS may point elsewhere since the upstream was saved), and the
        # connection goes to the address checked, not to a second resolution (DNS rebinding).
        pinned = pin_url(
            url, allow_private=settings.GATEWAY_ALLOW_PRIVATE_UPSTREAMS, portal_ok=True
        )
    except UrlRefused as exc:  # also UrlUnresolved
        raise UpstreamFailed(
            f"The upstream '{upstream.name}' was refused: {exc}", upstream=upstream.name
        ) from None
    return url, {
        "method": "POST",
        "url": pinned.url,
        "json": _upstream_body(held),
        "headers": {**_headers(upstream), "Host": pinned.host_header},
        "timeout": httpx.Timeout(upstream.timeout, connect=min(CONNECT_TIMEOUT, upstream.timeout)),
        "extensions": pinned.extensions,
    }


@contextmanager
def _transport_errors(upstream: Upstream):
    """httpx's transport errors as the gateway's: UpstreamTimeout (504), UpstreamFailed (502)."""
    try:
        yield
    except httpx.TimeoutException:
        raise UpstreamTimeout(
            f"The upstream '{upstream.name}' did not answer within {upstream.timeout} s.",
            upstream=upstream.name,
        ) from None
    except httpx.HTTPError as exc:
        raise UpstreamFailed(
            f"The upstream '{upstream.name}' could not be reached: {type(exc).__name__}.",
            upstream=upstream.name,
        ) from None


def _status_failed(upstream: Upstream, status: int, detail: bytes) -> UpstreamFailed:
    return UpstreamFailed(
        f"The upstream '{upstream.name}' answered {status}.",
        upstream=upstream.name,
        upstream_status=status,
        upstream_body=detail[:500].decode(errors="replace"),
    )


def upstream_send(held: Held) -> httpx.Response:
    """Send the request to the candidate's upstream, streaming the response body. Returns the
    open response (status 2xx; the caller closes it). Raises UpstreamTimeout (504) or
    UpstreamFailed (502: an error status, a dropped connection, a refused address)."""
    upstream = held.candidate.upstream
    url, request = _upstream_request(held)
    client = upstream_client(url)
    with _transport_errors(upstream):
        response = client.send(client.build_request(**request), stream=True)
    if response.status_code >= 400:
        try:
            detail = response.read()
        except httpx.HTTPError:
            detail = b""
        finally:
            response.close()
        raise _status_failed(upstream, response.status_code, detail)
    return response


async def upstream_send_async(held: Held) -> httpx.Response:
    """`upstream_send` on the event loop's pooled `httpx.AsyncClient` (the ASGI server): the
    same request, errors and pinning. Returns the open response (the caller `aclose`s it)."""
    upstream = held.candidate.upstream
    url, request = await sync_to_async(_upstream_request, thread_sensitive=False)(held)
    client = upstream_async_client(url)
    with _transport_errors(upstream):
        response = await client.send(client.build_request(**request), stream=True)
    if response.status_code >= 400:
        try:
            detail = await response.aread()
        except httpx.HTTPError:
            detail = b""
        finally:
            await response.aclose()
        raise _status_failed(upstream, response.status_code, detail)
    return response


def _usage_input(held: Held, usage: dict | None, streamed_bytes: int = 0) -> UsageInput:
    """The usage event of a served request: the upstream's reported counts (and, from an
    OpenRouter upstream, its `usage.cost`), or without usage the prompt bound and the bytes
    streamed."""
    upstream = held.candidate.upstream
    cost = None
    metadata = {
        "upstream": upstream.name,
        "upstream_id": str(upstream.public_id),
        "latency_ms": round((time.monotonic() - held.started) * 1000),
        "gateway": True,
    }
    if held.request.user:
        metadata["user"] = held.request.user
    if isinstance(usage, dict):
        prompt = _count(usage.get("prompt_tokens"))
        completion = _count(usage.get("completion_tokens"))
        cached = _count((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
        reasoning = _count((usage.get("completion_tokens_details") or {}).get("reasoning_tokens"))
        if upstream.kind == Upstream.Kind.OPENROUTER and usage.get("cost") is not None:
            try:
                cost = parse_credits(Decimal(str(usage["cost"])), allow_zero=True)
            except (ArithmeticError, ValueError, ValidationFailed):  # not an amount: priced
                metadata["reported_cost_refused"] = str(usage["cost"])[:50]
    else:
        prompt, completion, cached, reasoning = held.request.prompt_bound, streamed_bytes, 0, 0
        metadata["usage_estimated"] = True
    return UsageInput(
        id=held.generation_id,
        model=held.candidate.model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=min(cached, prompt),
        reasoning_tokens=min(reasoning, completion),
        cost=cost,
        conversation_id=held.request.session_id or held.request.user,
        metadata=metadata,
    )


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def chat_capture(held: Held, usage: dict | None, streamed_bytes: int = 0) -> Decimal:
    """Capture the hold with the request's actual cost (recording its usage event through the
    metering path) and return it (credits). The hold is always resolved:

    - a cost above the hold whose excess the credits or a budget do not allow is charged the
      hold's amount (the most that was reserved; `metadata.cost_above_hold` keeps the actual);
    - a hold that expired meanwhile (a stream longer than HOLD_TIMEOUT) is charged by a plain
      debit (`usage_record`)."""
    event = _usage_input(held, usage, streamed_bytes)
    try:
        return authorization_capture(hold=held.hold, event=event).event.cost
    except (InsufficientCredits, BudgetExceeded):
        capped = replace(
            event,
            cost=held.hold.amount,
            metadata={**(event.metadata or {}), "cost_above_hold": True},
        )
        return authorization_capture(hold=held.hold, event=capped).event.cost
    except HoldNotPending:
        attribution = Attribution.of_hold(held.hold)
        return usage_record(attribution=attribution, event=event).event.cost


def _capture(held: Held, usage: dict | None, streamed_bytes: int = 0) -> Decimal | None:
    """`chat_capture`, or None when the database cannot take it now (`DATABASE_UNAVAILABLE`):
    the upstream has answered and its tokens are bought, so the answer still goes out (without
    `usage.cost`) and a thread of its own retries the capture after each of
    CAPTURE_RETRY_DELAYS. A retry is idempotent (a capture that did commit before its error
    returns its first result); one after the hold expired is charged by a plain debit. Lost only
    when the process ends before the database answers: the hold then expires unpaid."""
    try:
        return chat_capture(held, usage, streamed_bytes)
    except DATABASE_UNAVAILABLE as exc:
        logger.warning("gateway: capture of %s deferred: %s", held.generation_id, exc)
    threading.Thread(
        target=_capture_retried,
        args=(held, usage, streamed_bytes),
        name=f"capture-{held.generation_id}",
        daemon=True,
    ).start()
    return None


def _capture_retried(held: Held, usage: dict | None, streamed_bytes: int) -> None:
    for delay in CAPTURE_RETRY_DELAYS:
        time.sleep(delay)
        try:
            cost = chat_capture(held, usage, streamed_bytes)
        except DATABASE_UNAVAILABLE:
            continue
        except ApplicationError:
            logger.exception("gateway: deferred capture of %s failed", held.generation_id)
            return
        finally:
            connection.close()  # this thread's connection, back to the pool
        logger.info("gateway: deferred capture of %s: %s credits", held.generation_id, cost)
        return
    logger.error("gateway: gave up the capture of %s; its hold expires", held.generation_id)


def chat_void(held: Held) -> None:
    """Release the whole hold (the upstream failed: nothing was bought)."""
    try:
        hold_void(hold=held.hold)
    except HoldNotPending:
        pass


def _usage_out(usage: dict | None, cost: Decimal | None) -> dict:
    """The usage object of an answer; without `cost` when the capture was deferred (None)."""
    usage = dict(usage) if isinstance(usage, dict) else {}
    for key in ("prompt_tokens", "completion_tokens"):
        usage[key] = _count(usage.get(key))
    usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
    usage.pop("cost", None)  # the upstream's, if any: ours is what was charged
    if cost is not None:  # Decimal; a JSON number at the boundary (DRF's encoder), as OpenRouter
        usage["cost"] = cost
    usage.setdefault("is_byok", False)
    return usage


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
