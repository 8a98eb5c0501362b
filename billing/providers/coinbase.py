"""Coinbase Commerce over httpx: charges for credit purchases, and webhook signatures.

API (Coinbase Commerce, "Create a charge"): `POST {COINBASE_COMMERCE_API_BASE}/charges` with
headers `X-CC-Api-Key` and `X-CC-Version: 2018-03-22` and a JSON body `{"name", "description",
"pricing_type": "fixed_price", "local_price": {"amount": "12.34", "currency": "USD"},
"metadata": {"order_id"}, "redirect_url", "cancel_url"}`; the answer is `{"data": {"code",
"hosted_url", ...}}`: the buyer pays on `hosted_url`.

Webhooks: `X-CC-Webhook-Signature` is the hex HMAC-SHA256 of the raw body keyed with the
endpoint's shared secret (COINBASE_COMMERCE_WEBHOOK_SECRET), compared in constant time. The
body is `{"id", "scheduled_for", "attempt_number", "event": {"id", "type", "data": <charge>}}`.

Every call has PAYMENT_PROVIDER_TIMEOUT_SECONDS and PAYMENT_PROVIDER_RETRIES retries of
connection failures (httpx's transport retries: a request that never reached Coinbase).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal

import httpx
from django.conf import settings

from portal.errors import ValidationFailed

from . import ProviderUnavailable, WebhookInvalid
from .stripe import Checkout

API_VERSION = "2018-03-22"


def _client() -> httpx.Client:
    if not settings.COINBASE_COMMERCE_API_KEY:
        raise ProviderUnavailable("Crypto payments are not configured (COINBASE_COMMERCE_API_KEY).")
    return httpx.Client(
        base_url=settings.COINBASE_COMMERCE_API_BASE.rstrip("/"),
        headers={
            "X-CC-Api-Key": settings.COINBASE_COMMERCE_API_KEY,
            "X-CC-Version": API_VERSION,
            "Accept": "application/json",
        },
        timeout=settings.PAYMENT_PROVIDER_TIMEOUT_SECONDS,
        transport=httpx.HTTPTransport(retries=settings.PAYMENT_PROVIDER_RETRIES),
    )


def charge_create(
    *, order_id: str, amount: Decimal, total: Decimal, redirect_url: str, cancel_url: str
) -> Checkout:
    """Create the fixed-price charge of order `order_id` for `total` USD buying `amount`
    credits. Returns its `hosted_url` and `code`.

    Raises ProviderUnavailable (not configured, unreachable after the retries, timeout, 5xx, an
    answer without `data.code` / `data.hosted_url`), ValidationFailed (Coinbase refused the
    request: 400 or 422)."""
    body = {
        "name": "AI credits",
        "description": f"{amount} AI credits",
        "pricing_type": "fixed_price",
        "local_price": {"amount": f"{total:.2f}", "currency": "USD"},
        "metadata": {"order_id": order_id},
        "redirect_url": redirect_url,
        "cancel_url": cancel_url,
    }
    try:
        with _client() as client:
            response = client.post("/charges", json=body)
    except httpx.TimeoutException:
        raise ProviderUnavailable("Coinbase Commerce did not answer in time.") from None
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(f"Coinbase Commerce is unreachable: {exc}") from None
    if response.status_code in (400, 422):
        message = _error_message(response)
        raise ValidationFailed({"provider": [f"Coinbase Commerce refused the charge: {message}"]})
    if response.status_code >= 300:
        raise ProviderUnavailable(
            f"Coinbase Commerce answered {response.status_code}: {_error_message(response)}"
        )
    try:
        data = response.json()["data"]
        code, url = data["code"], data["hosted_url"]
    except (ValueError, KeyError, TypeError):
        raise ProviderUnavailable("Coinbase Commerce answered a charge without code.") from None
    if not isinstance(code, str) or not isinstance(url, str) or not code or not url:
        raise ProviderUnavailable("Coinbase Commerce answered a charge without code.")
    return Checkout(url=url, reference=code)


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return response.reason_phrase or str(response.status_code)


def signature_of(payload: bytes, secret: str) -> str:
    """The hex HMAC-SHA256 of `payload` with `secret` (X-CC-Webhook-Signature)."""
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def webhook_event(payload: bytes, signature: str | None) -> dict:
    """The verified body of a webhook request (raw body, `X-CC-Webhook-Signature`). Raises
    WebhookInvalid (no or wrong signature, not JSON, not an object), ProviderUnavailable
    (COINBASE_COMMERCE_WEBHOOK_SECRET unset)."""
    if not signature:
        raise WebhookInvalid("No X-CC-Webhook-Signature header.")
    if not settings.COINBASE_COMMERCE_WEBHOOK_SECRET:
        raise ProviderUnavailable(
            "Coinbase Commerce webhooks are not configured (COINBASE_COMMERCE_WEBHOOK_SECRET)."
        )
    expected = signature_of(payload, settings.COINBASE_COMMERCE_WEBHOOK_SECRET)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise WebhookInvalid("Invalid X-CC-Webhook-Signature.")
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise WebhookInvalid("Not a Coinbase Commerce event: not JSON.") from None
    if not isinstance(body, dict):
        raise WebhookInvalid("Not a Coinbase Commerce event: not an object.")
    return body
