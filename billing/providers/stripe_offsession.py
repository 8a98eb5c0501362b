"""Stripe for automatic top-up: a customer per organization, a card saved through a Checkout
Session in `setup` mode, and off-session charges of that card (PaymentIntents created with
`off_session=true, confirm=true`). Stripe docs: "Save payment details during setup" (Checkout,
`mode=setup`) and "Charge a saved payment method off-session" (a decline or a card that needs
authentication answers 402 with a `card_error`: `card_declined`, `authentication_required`...).

Every call goes through `stripe_call` (timeouts and the library's retries; a network failure or
5xx is `ProviderUnavailable`, a refused request `ValidationFailed`); a card error comes back as a
`ChargeResult` with `status="declined"`, not an exception.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

import stripe

from portal.money import from_cents, to_cents

from .stripe_api import stripe_call, stripe_client


@dataclass(frozen=True)
class ChargeResult:
    """What an off-session charge came to. `status`: `succeeded`, `processing` (the provider
    settles it later: the `payment_intent.succeeded` webhook), or `declined` (a card error, with
    `failure_code` and `failure_message`). `amount` is USD received (succeeded) or asked."""

    status: str
    payment_intent: str
    amount: Decimal
    currency: str
    failure_code: str = ""
    failure_message: str = ""


def customer_create(*, email: str, name: str, organization_id: int) -> str:
    """Create the Stripe customer of an organization; returns its id (`cus_...`)."""
    customer = stripe_call(
        stripe_client().v1.customers.create,
        params={
            "email": email or None,
            "name": name,
            "metadata": {"organization_id": str(organization_id)},
        },
        options={"idempotency_key": f"customer-{uuid.uuid4()}"},
    )
    return customer.id


def setup_session_create(*, customer: str, success_url: str, cancel_url: str) -> tuple[str, str]:
    """A Checkout Session in `setup` mode saving a card for off-session use by `customer`.
    Returns (session id, the URL to send the member to). `success_url` should carry
    `session_id={CHECKOUT_SESSION_ID}` (Stripe fills it in)."""
    session = stripe_call(
        stripe_client().v1.checkout.sessions.create,
        params={
            "mode": "setup",
            "customer": customer,
            "payment_method_types": ["card"],
            "setup_intent_data": {"metadata": {"purpose": "topup"}},
            "success_url": success_url,
            "cancel_url": cancel_url,
        },
    )
    return session.id, session.url


@dataclass(frozen=True)
class SavedCard:
    payment_method: str
    customer: str


def setup_session_result(session_id: str) -> SavedCard | None:
    """The card a completed setup Checkout Session saved (the session retrieved with its
    `setup_intent` expanded), or None when the session is not a completed setup session or its
    SetupIntent did not succeed."""
    session = stripe_call(
        stripe_client().v1.checkout.sessions.retrieve,
        session_id,
        params={"expand": ["setup_intent"]},
    ).to_dict()
    intent = session.get("setup_intent")
    if session.get("mode") != "setup" or session.get("status") != "complete" or not intent:
        return None
    if isinstance(intent, str) or intent.get("status") != "succeeded":
        return None
    method = intent.get("payment_method")
    method = method if isinstance(method, str) else (method or {}).get("id")
    if not method:
        return None
    return SavedCard(payment_method=method, customer=session.get("customer") or "")


def charge_off_session(
    *, customer: str, payment_method: str, amount: Decimal, currency: str, order_id: str
) -> ChargeResult:
    """Charge `amount` (USD at whole cents) to the saved card, without the member present.
    The idempotency key is the order's public id: a retry after a timeout never charges twice
    (Stripe answers the first result for 24 hours). Raises ProviderUnavailable (network, 5xx,
    rate limit) and ValidationFailed (a request Stripe refuses: no such customer or card)."""
    try:
        intent = stripe_call(
            stripe_client().v1.payment_intents.create,
            params={
                "amount": to_cents(amount),
                "currency": currency.lower(),
                "customer": customer,
                "payment_method": payment_method,
                "off_session": True,
                "confirm": True,
                "description": "Automatic top-up of AI credits",
                "metadata": {"order_id": order_id, "purpose": "topup"},
            },
            options={"idempotency_key": order_id},
        )
    except stripe.CardError as exc:
        error = (exc.json_body or {}).get("error") or {}
        intent = error.get("payment_intent") or {}
        return ChargeResult(
            status="declined",
            payment_intent=intent.get("id", "") if isinstance(intent, dict) else "",
            amount=amount,
            currency=currency.upper(),
            failure_code=error.get("decline_code") or exc.code or "card_error",
            failure_message=(error.get("message") or exc.user_message or str(exc))[:500],
        )
    intent = intent.to_dict()
    status = intent.get("status")
    if status == "succeeded":
        return ChargeResult(
            status="succeeded",
            payment_intent=intent["id"],
            amount=from_cents(intent.get("amount_received") or 0),
            currency=(intent.get("currency") or currency).upper(),
        )
    if status == "processing":
        return ChargeResult("processing", intent["id"], amount, currency.upper())
    # requires_payment_method / requires_action without an error: not paid, the card needs the
    # member (Stripe answers these with a 402 card_error for off-session confirmations).
    return ChargeResult(
        "declined", intent["id"], amount, currency.upper(), status, "The card was not charged."
    )
