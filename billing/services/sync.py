"""OpenRouter credit sync: an organization's OpenRouter management key, and snapshots comparing
what OpenRouter says the organization has (`GET /api/v1/credits`) with the portal's own totals.

OpenRouter's contract (API reference, "Get remaining credits"): `GET {base}/credits` with
`Authorization: Bearer <management key>` answers 200 `{"data": {"total_credits": number,
"total_usage": number}}` (credits = USD), and errors as `{"error": {"code": int, "message": str}}`:
401 for a missing or invalid key, 403 when the key may not read credits (not a management key),
500 on its side. Amounts are read as `Decimal` straight from the JSON text (never a float) and
rounded to the portal's quantum.

Drift (`OpenRouterSnapshot.drift`) = what OpenRouter has left (total_credits - total_usage) minus
what the portal has left (its total credits - total usage, `credits.selectors.credit_totals`).
A drift whose size is above the connection's `drift_threshold` raises `credits.sync_drift`
through `notify`, at most once a UTC day per organization (the event's `once_per`).

A sync fetches first, outside any transaction (no row is locked while OpenRouter is waited on),
then writes its snapshot: a failed fetch (401, 403, 5xx, a timeout, an unreachable server, a body
that is not OpenRouter's shape) is a snapshot with status `error` and a message saying why, not an
exception. Connection errors are retried (OPENROUTER_SYNC_RETRIES, httpx's transport retries:
0 s, 0.5 s, 1 s ...); an answer, even a 5xx, and a timeout waiting for one are not: the next
periodic sync tries again.

Audit: setting, changing and removing the connection, and every sync started by someone (the
API's and the page's button); the periodic task's syncs are recorded by their snapshots only (one
an hour would bury the organization's audit log).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from decimal import Decimal

import httpx
from cryptography.fernet import InvalidToken
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Organization
from credits.selectors import balance_summary, credit_totals
from notifications.services import notify
from portal.errors import NotFound, ValidationFailed
from portal.money import (
    CREDIT_DECIMAL_PLACES,
    CREDIT_MAX_DIGITS,
    format_credits,
    parse_credits,
    quantize_credits,
)

from ..models import OpenRouterConnection, OpenRouterSnapshot

log = logging.getLogger("billing.sync")

DRIFT_EVENT = "credits.sync_drift"
DEFAULT_DRIFT_THRESHOLD = Decimal("1")  # credits, when a connection is made without one
MAX_BODY_BYTES = 64 * 1024  # OpenRouter's answer is a few dozen bytes
KEY_PATTERN = re.compile(r"[\x21-\x7e]{20,500}")  # printable ASCII, no spaces: a header value
OPENROUTER_KEY_PREFIX = "sk-or-v1-"  # noqa: S105 - the public prefix of OpenRouter keys
_LIMIT = Decimal(10) ** (CREDIT_MAX_DIGITS - CREDIT_DECIMAL_PLACES)


# The OpenRouter client ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamCredits:
    """OpenRouter's answer, credits (USD)."""

    total_credits: Decimal
    total_usage: Decimal


class UpstreamError(Exception):
    """OpenRouter gave no usable answer: `message` says why, for people; `http_status` is its
    HTTP status (None: no answer at all)."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number")


def credits_body_parse(content: bytes) -> UpstreamCredits:
    """OpenRouter's 200 body `{"data": {"total_credits": number, "total_usage": number}}` as
    Decimals (parsed from the JSON text: `parse_float=Decimal`), rounded to the credit quantum.
    Raises UpstreamError for anything else: not JSON, no `data` object, a field missing, not a
    JSON number (strings, booleans, NaN), negative, or beyond the portal's range."""
    try:
        document = json.loads(
            content, parse_float=Decimal, parse_int=Decimal, parse_constant=_refuse_constant
        )
    except (ValueError, RecursionError):
        raise UpstreamError("OpenRouter's answer is not JSON.", 200) from None
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        raise UpstreamError('OpenRouter\'s answer has no "data" object.', 200)
    values = {}
    for name in ("total_credits", "total_usage"):
        value = data.get(name)
        if not isinstance(value, Decimal) or not value.is_finite():
            raise UpstreamError(f'OpenRouter\'s answer has no number "{name}".', 200)
        if value < 0 or value >= _LIMIT:
            raise UpstreamError(f'OpenRouter\'s "{name}" is out of range: {value}.', 200)
        values[name] = quantize_credits(value)
    return UpstreamCredits(**values)


def _upstream_message(content: bytes) -> str:
    """The `error.message` of OpenRouter's error body, if there is one (at most 200 characters)."""
    try:
        document = json.loads(content)
    except (ValueError, RecursionError):
        return ""
    error = document.get("error") if isinstance(document, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return " ".join(message.split())[:200] if isinstance(message, str) else ""


def _status_message(status: int, upstream: str) -> str:
    said = f": {upstream.rstrip('.')}" if upstream else ""
    if status == 401:
        return (
            f"OpenRouter refused the key (401{said}). Check the management key, or set a new one."
        )
    if status == 403:
        return (
            f"OpenRouter does not let this key read credits (403{said}). "
            "GET /credits needs a management key, not an inference key."
        )
    if status == 429:
        return f"OpenRouter is rate-limiting the key (429{said}); the next sync tries again."
    if status >= 500:
        return f"OpenRouter failed (HTTP {status}{said}); the next sync tries again."
    return f"OpenRouter answered HTTP {status}{said}."


def openrouter_credits_fetch(*, key: str) -> UpstreamCredits:
    """`GET {OPENROUTER_API_BASE}/credits` with the management `key` (httpx): OpenRouter's
    `total_credits` and `total_usage`, credits. Each step waits at most
    OPENROUTER_SYNC_TIMEOUT_SECONDS; a refused or failed connection is retried
    OPENROUTER_SYNC_RETRIES times. Raises UpstreamError (with OpenRouter's status and message)
    for a non-200 answer, a timeout, no connection, or a body not in OpenRouter's shape."""
    url = settings.OPENROUTER_API_BASE.rstrip("/") + "/credits"
    timeout = settings.OPENROUTER_SYNC_TIMEOUT_SECONDS
    transport = httpx.HTTPTransport(retries=settings.OPENROUTER_SYNC_RETRIES)
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    try:
        with (
            httpx.Client(transport=transport, timeout=timeout) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            content = b""
            for chunk in response.iter_bytes():
                content += chunk
                if len(content) > MAX_BODY_BYTES:
                    raise UpstreamError(
                        f"OpenRouter's answer is larger than {MAX_BODY_BYTES} bytes.",
                        response.status_code,
                    )
            status = response.status_code
    except httpx.TimeoutException:
        raise UpstreamError(f"OpenRouter did not answer within {timeout:g} s.") from None
    except httpx.HTTPError as exc:
        reason = str(exc).replace(key, "…") or type(exc).__name__
        raise UpstreamError(f"OpenRouter could not be reached: {reason}.") from None
    if status != 200:
        upstream = _upstream_message(content).replace(key, "…")
        raise UpstreamError(_status_message(status, upstream), status)
    return credits_body_parse(content)


# The connection ----------------------------------------------------------------------------------


def key_mask(key: str) -> str:
    """What people see of a key: OpenRouter's public prefix (else its first 3 characters) and
    its last 4."""
    head = OPENROUTER_KEY_PREFIX if key.startswith(OPENROUTER_KEY_PREFIX) else key[:3]
    return f"{head}…{key[-4:]}"


def _key(value) -> str:
    key = value.strip() if isinstance(value, str) else value
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ValidationFailed(
            {
                "key": [
                    "An OpenRouter management key (sk-or-v1-...): 20 to 500 printable characters "
                    "without spaces."
                ]
            }
        )
    return key


def _threshold(value) -> Decimal:
    return parse_credits(value, field="drift_threshold", allow_zero=True)


def _document(connection: OpenRouterConnection) -> dict:
    return {
        "key_mask": connection.key_mask,
        "drift_threshold": str(connection.drift_threshold),
        "enabled": connection.enabled,
    }


@transaction.atomic
def openrouter_connection_set(
    *,
    organization: Organization,
    actor: Actor,
    key: str | None = None,
    drift_threshold=None,
    enabled: bool | None = None,
) -> tuple[OpenRouterConnection, bool]:
    """Connect the organization to OpenRouter, or change its connection: a new management `key`
    (stored encrypted; required to connect), the `drift_threshold` (credits, a decimal string, 0
    or more; default 1), `enabled` (synced by the periodic task). Returns (connection, created).
    Raises ValidationFailed, writing nothing, for a key or threshold that is not one."""
    key = _key(key) if key is not None else None
    threshold = _threshold(drift_threshold) if drift_threshold is not None else None
    if enabled is not None and not isinstance(enabled, bool):
        raise ValidationFailed({"enabled": ["true or false."]})
    # The organization's row first (as the audit chain takes it): two first connections made at
    # once are one after the other, not a unique violation.
    Organization.objects.select_for_update().filter(pk=organization.pk).exists()
    connection = OpenRouterConnection.objects.filter(organization=organization).first()
    created = connection is None
    if created:
        if key is None:
            raise ValidationFailed({"key": ["Required to connect: an OpenRouter management key."]})
        connection = OpenRouterConnection(
            organization=organization,
            drift_threshold=DEFAULT_DRIFT_THRESHOLD if threshold is None else threshold,
        )
        before = None
    else:
        before = _document(connection)
        if threshold is not None:
            connection.drift_threshold = threshold
    if key is not None:
        connection.key = key
        connection.key_mask = key_mask(key)
    if enabled is not None:
        connection.enabled = enabled
    connection.updated_at = timezone.now()
    connection.save()
    audit_record(
        organization=organization,
        actor=actor,
        action="openrouter.connected" if created else "openrouter.updated",
        target=connection,
        before=before,
        after={**_document(connection), "key_changed": key is not None},
    )
    return connection, created


@transaction.atomic
def openrouter_connection_delete(*, connection: OpenRouterConnection, actor: Actor) -> None:
    """Forget the organization's key (its snapshots stay, as history)."""
    organization = connection.organization
    before = _document(connection)
    OpenRouterConnection.objects.filter(pk=connection.pk).delete()
    audit_record(
        organization=organization,
        actor=actor,
        action="openrouter.disconnected",
        target=connection,
        before=before,
    )


# Syncing -----------------------------------------------------------------------------------------


def openrouter_sync(
    *,
    connection: OpenRouterConnection,
    trigger: str = OpenRouterSnapshot.Trigger.MANUAL,
    actor: Actor | None = None,
) -> OpenRouterSnapshot:
    """Fetch OpenRouter's credits with the connection's key and record a snapshot beside the
    portal's totals of now (status `ok` with the drift, or `error` with why). Raises an alert
    when the drift's size is above the threshold (once a UTC day per organization). `actor`: who
    asked (audited); none for the periodic task. Raises NotFound when the connection was
    removed meanwhile."""
    try:
        try:
            key = connection.key
        except InvalidToken:
            raise UpstreamError(
                "The stored key cannot be decrypted (FIELD_ENCRYPTION_KEY no longer holds the "
                "key it was encrypted with): set the management key again."
            ) from None
        upstream, failure = openrouter_credits_fetch(key=key), None
    except UpstreamError as exc:
        upstream, failure = None, exc
        log.warning("OpenRouter sync of organization %s: %s", connection.organization_id, exc)
    return _snapshot_record(
        connection=connection, trigger=trigger, actor=actor, upstream=upstream, failure=failure
    )


@transaction.atomic
def _snapshot_record(
    *,
    connection: OpenRouterConnection,
    trigger: str,
    actor: Actor | None,
    upstream: UpstreamCredits | None,
    failure: UpstreamError | None,
) -> OpenRouterSnapshot:
    current = OpenRouterConnection.objects.filter(pk=connection.pk).first()
    if current is None:
        raise NotFound("No OpenRouter connection: it was removed.", resource="openrouter")
    organization = connection.organization
    portal = credit_totals(balance_summary(organization=organization))
    now = timezone.now()
    snapshot = OpenRouterSnapshot(
        organization=organization,
        fetched_at=now,
        trigger=trigger,
        portal_total_credits=quantize_credits(portal.total_credits),
        portal_total_usage=quantize_credits(portal.total_usage),
    )
    if upstream is None:
        snapshot.status = OpenRouterSnapshot.Status.ERROR
        snapshot.error = failure.message[:500]
        snapshot.http_status = failure.http_status
    else:
        upstream_remaining = upstream.total_credits - upstream.total_usage
        snapshot.status = OpenRouterSnapshot.Status.OK
        snapshot.http_status = 200
        snapshot.upstream_total_credits = upstream.total_credits
        snapshot.upstream_total_usage = upstream.total_usage
        snapshot.drift = quantize_credits(upstream_remaining - portal.remaining)
        if abs(snapshot.drift) > current.drift_threshold:
            event = notify(
                organization=organization,
                type=DRIFT_EVENT,
                key="openrouter",
                data={
                    "drift": format_credits(snapshot.drift),
                    "threshold": format_credits(current.drift_threshold),
                    "upstream_remaining": format_credits(upstream_remaining),
                    "portal_remaining": format_credits(portal.remaining),
                    "fetched_at": now.isoformat(),
                },
            )
            snapshot.alerted = event is not None
    snapshot.save()
    if actor is not None:
        audit_record(
            organization=organization,
            actor=actor,
            action="openrouter.synced",
            target=snapshot,
            after={"status": snapshot.status, "drift": snapshot.drift, "error": snapshot.error},
        )
    return snapshot


def openrouter_sync_due() -> list[int]:
    """The ids of the connections the periodic task syncs: every enabled one."""
    return list(
        OpenRouterConnection.objects.filter(enabled=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def openrouter_sync_scheduled(*, connection_id: int) -> OpenRouterSnapshot | None:
    """The periodic sync of one connection (`billing.tasks.openrouter_sync_connection`): none
    when it was removed or disabled since it was queued."""
    connection = (
        OpenRouterConnection.objects.filter(pk=connection_id, enabled=True)
        .select_related("organization")
        .first()
    )
    if connection is None:
        return None
    try:
        return openrouter_sync(connection=connection, trigger=OpenRouterSnapshot.Trigger.SCHEDULE)
    except NotFound:  # removed during the fetch
        return None
