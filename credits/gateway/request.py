"""A chat request, validated (`chat_parse`): its candidates in order, and the bound on its
prompt's tokens (`prompt_bound`); `Held`, a request whose worst case is held."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from django.utils import timezone

from portal.errors import (
    ValidationFailed,
)

from ..models import Hold, Upstream
from ..services.prices import model_context_window, price_for
from ..services.upstreams import upstream_for

# Tokens a message costs beyond its content (role and framing tokens: OpenAI counts 3 to 4), and
# the reply's priming; a bound per image part (a high-detail image is at most about 1,600 tokens
# at the providers that publish their image token counts).
MESSAGE_OVERHEAD_TOKENS = 8
REPLY_OVERHEAD_TOKENS = 8
IMAGE_PART_TOKENS = 2_000
MAX_CANDIDATES = 10


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
