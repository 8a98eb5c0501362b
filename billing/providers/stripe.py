"""Stripe Checkout for credit purchases, and Stripe's webhook signatures.

A purchase is a Checkout Session in `payment` mode (Stripe docs, "Checkout Sessions: create"):
one line of `to_cents(order.total)` cents in `usd`, `client_reference_id` and `metadata[order_id]`
the order's public id (the PaymentIntent it makes carries `metadata[order_id]` too, so its
events and refunds lead back to the order), success and cancel URLs back to the order's page,
and `expires_at` (Stripe allows 30 minutes to 24 hours) before the portal expires the order.

Webhooks are verified by the library (`stripe.Webhook.construct_event`: the `Stripe-Signature`
header `t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the endpoint secret>`, and a
timestamp tolerance, STRIPE_WEBHOOK_TOLERANCE_SECONDS, 300 by default as Stripe's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import stripe
from django.conf import settings

from portal.money import to_cents

from . import ProviderUnavailable, WebhookInvalid
from .stripe_api import stripe_call, stripe_client


@dataclass(frozen=True)
class Checkout:
    """Where the buyer pays (`url`) and the provider's id of it (`reference`)."""

    url: str
    reference: str


def checkout_session_create(
    *,
    order_id: str,
    amount: Decimal,
    total: Decimal,
    success_url: str,
    cancel_url: str,
    expires_at: datetime,
    customer_email: str = "",
) -> Checkout:
    """Create the Checkout Session of order `order_id` (its public id) for `total` USD (tax
    included) buying `amount` credits. Idempotent at Stripe per order (`Idempotency-Key`
    `checkout:<order id>`), so the library's retries never make two sessions.

    Raises ProviderUnavailable (not configured, unreachable, timeout, 5xx), ValidationFailed
    (Stripe refused a parameter)."""
    params = {
        "mode": "payment",
        "client_reference_id": order_id,
        "metadata": {"order_id": order_id},
        "payment_intent_data": {"metadata": {"order_id": order_id}},
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": "usd",
                    "unit_amount": to_cents(total),
                    "product_data": {"name": f"{amount} AI credits"},
                },
            }
        ],
        "success_url": success_url,
        "cancel_url": cancel_url,
        "expires_at": int(expires_at.timestamp()),
    }
    if customer_email:
        params["customer_email"] = customer_email
    client = stripe_client()
    session = stripe_call(
        client.v1.checkout.sessions.create,
        params=params,
        options={"idempotency_key": f"checkout:{order_id}"},
    )
    data = session.to_dict()
    url, reference = data.get("url"), data.get("id")
    if not isinstance(url, str) or not isinstance(reference, str) or not url or not reference:
        raise ProviderUnavailable("Stripe answered a Checkout Session without id or url.")
    return Checkout(url=url, reference=reference)


def webhook_event(payload: bytes, signature: str | None) -> dict:
    """The verified event of a webhook request (its raw body and `Stripe-Signature` header), as
    plain JSON. Raises WebhookInvalid (no or wrong signature, timestamp outside the
    tolerance, a body that is not JSON), ProviderUnavailable (STRIPE_WEBHOOK_SECRET unset)."""
    if not signature:
        raise WebhookInvalid("No Stripe-Signature header.")
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise ProviderUnavailable("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET).")
    try:
        text = payload.decode("utf-8")
        stripe.Webhook.construct_event(
            text,
            signature,
            settings.STRIPE_WEBHOOK_SECRET,
            tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS,
        )
        event = json.loads(text)
    except stripe.SignatureVerificationError as exc:
        raise WebhookInvalid(f"Invalid Stripe signature: {exc.user_message or exc}") from None
    except (ValueError, IndexError, TypeError, KeyError, AttributeError) as exc:
        # Not UTF-8 or JSON, or JSON that is not an event object (the library reads it as one).
        raise WebhookInvalid(f"Not a Stripe event: {type(exc).__name__}") from None
    if not isinstance(event, dict):
        raise WebhookInvalid("Not a Stripe event: not an object.")
    return event
