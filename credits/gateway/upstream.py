"""The call to an upstream: pooled httpx clients per origin, the request's body and headers, the
address pinned (`notifications.urlcheck.pin_url`), transport errors as UpstreamFailed (502) and
UpstreamTimeout (504)."""

from __future__ import annotations

import asyncio
import threading
import weakref
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings

from notifications.urlcheck import UrlRefused, pin_url
from portal.errors import (
    ApplicationError,
)

from ..models import Upstream
from .request import Held

CONNECT_TIMEOUT = 10.0  # seconds, at most the upstream's own timeout

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
