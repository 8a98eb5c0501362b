"""Structured logs: one JSON object per line, with the request's id, organization and API key
prefix on every line logged while a request is served (`LOG_FORMAT=json`, the default with
`DEBUG` off; see the settings' docstring).

The request context lives in context variables set by `portal.middleware.RequestContextMiddleware`
(the request id) and by whatever resolves the tenant (`log_context_set`: the API key
authentication, the API's session principal, the organization pages). No line carries a secret:
the key appears as its visible prefix only (`sk-cp-v1-abc`), and `redact` masks what could still
reach a message (a full API key, a bearer token, the token of an invitation or password reset in
a logged path)."""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
organization_var: ContextVar[str | None] = ContextVar("organization", default=None)
key_prefix_var: ContextVar[str | None] = ContextVar("key_prefix", default=None)

# X-Request-ID from a proxy is taken when it is 1 to 64 of these characters; else a new one.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# What must never reach a log line, and what replaces it.
_SECRETS = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    # API keys of the portal (accounts.authentication.KEY_PREFIX): keep the visible prefix.
    (re.compile(r"(sk-cp-v1-[A-Za-z0-9_-]{3})[A-Za-z0-9_-]*"), r"\1…"),
    # Other providers' keys that an upstream may echo (sk-or-v1-…, sk-proj-…, whsec_…).
    (re.compile(r"\b(sk-(?!cp-v1-)|whsec_)[A-Za-z0-9_-]{8,}"), r"\1…"),
    # Paths whose segments are credentials (accounts invitations, Django's password reset).
    (re.compile(r"/invitations/[^/\s?\"']+"), "/invitations/[redacted]"),
    (re.compile(r"/reset/[^/\s?\"']+/[^/\s?\"']+"), "/reset/[redacted]/[redacted]"),
]


def redact(text: str) -> str:
    """`text` with API keys cut to their prefix and tokens masked."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def request_id_from(header: str | None) -> str:
    """The request id: the client's or proxy's `X-Request-ID` when it is a plain token (letters,
    digits, `._:-`, at most 64), else a new UUID4 hex."""
    if header and REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex


def key_prefix(label: str) -> str:
    """The visible start of an API key from its stored label (`sk-cp-v1-abc...wxyz`)."""
    return label.split("...", 1)[0]


def log_context_set(*, organization=None, key=None) -> None:
    """Name the request's organization (its slug) and API key (its prefix) on the log lines
    that follow, until the request ends."""
    if organization is not None:
        organization_var.set(organization.slug)
    if key is not None:
        key_prefix_var.set(key_prefix(key.label))
        if organization is None:
            organization_var.set(key.organization.slug)


def log_context() -> dict[str, str]:
    """The current request's context: request_id, organization, key_prefix (those that are set)."""
    values = {
        "request_id": request_id_var.get(),
        "organization": organization_var.get(),
        "key_prefix": key_prefix_var.get(),
    }
    return {k: v for k, v in values.items() if v}


# Attributes every LogRecord has; the others came from `extra=` and are written out.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line: time (UTC, ISO 8601), level, logger, message, the request
    context (`log_context`), the record's `extra=` fields, and the exception's traceback. Every
    string is passed through `redact`."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(log_context())
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                line[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """The plain format of the demo and development, redacted as the JSON lines are."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in log_context().items())
        text = super().format(record)
        return redact(f"{text} [{context}]" if context else text)


def _redacted(value):
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def sentry_before_send(event: dict, hint: dict) -> dict:
    """sentry-sdk's `before_send`: the event with every string redacted (a key or token in a URL,
    a message or a local variable), and the request's context as tags."""
    event = _redacted(event)
    tags = event.setdefault("tags", {})
    tags.update(log_context())
    return event
