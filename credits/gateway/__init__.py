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

The modules, in the order a request meets them (each imports only those before it):
`request` (parse, prompt bound, `Held`), `upstream` (clients, the call, its errors), `charge`
(hold, capture, void), `relay` (the answer, plain or streamed). Their public names are
re-exported here: callers use `credits.gateway`.
"""

from .charge import (
    CAPTURE_RETRY_DELAYS,
    HOLD_TIMEOUT,
    chat_capture,
    chat_hold,
    chat_void,
)
from .relay import chat_complete, chat_stream, chat_stream_async
from .request import (
    IMAGE_PART_TOKENS,
    MAX_CANDIDATES,
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_OVERHEAD_TOKENS,
    Candidate,
    ChatRequest,
    Held,
    chat_parse,
    prompt_bound,
)
from .upstream import (
    CONNECT_TIMEOUT,
    UpstreamFailed,
    UpstreamTimeout,
    upstream_async_client,
    upstream_client,
    upstream_send,
    upstream_send_async,
)

__all__ = [
    "CAPTURE_RETRY_DELAYS",
    "CONNECT_TIMEOUT",
    "HOLD_TIMEOUT",
    "IMAGE_PART_TOKENS",
    "MAX_CANDIDATES",
    "MESSAGE_OVERHEAD_TOKENS",
    "REPLY_OVERHEAD_TOKENS",
    "Candidate",
    "ChatRequest",
    "Held",
    "UpstreamFailed",
    "UpstreamTimeout",
    "chat_capture",
    "chat_complete",
    "chat_hold",
    "chat_parse",
    "chat_stream",
    "chat_stream_async",
    "chat_void",
    "prompt_bound",
    "upstream_async_client",
    "upstream_client",
    "upstream_send",
    "upstream_send_async",
]
