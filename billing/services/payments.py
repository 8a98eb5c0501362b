"""Purchases through a payment provider: the checkout, the provider's webhook events, refunds,
bank-transfer confirmations, and the expiry of orders nobody paid.

Starting a purchase (`purchase_start`). The provider's checkout is made first, for an order id
chosen in advance, and only then is the order written, with its checkout URL, in one
transaction. A provider that is down (`ProviderUnavailable`, 503) therefore leaves nothing
behind; a database failure after a successful checkout leaves only the provider's checkout,
which expires on its own and whose events name no order (refused). The order is never written
before the provider answered, so no transaction (and no audit-chain lock) is held across a
network call.

Webhook events (`stripe_webhook_receive`, `coinbase_webhook_receive`). A request whose signature
does not verify, or whose body is not an event, raises `WebhookInvalid` (the API answers 400,
logs it, stores nothing). A verified event is stored once as a `ProviderEvent` (unique per
provider and event id), with the outcome of applying it:
- `applied`: it changed the order (paid through `order_settle`, failed, expired, refunded);
- `ignored`: nothing to do (a type the portal does not use, a payment still in progress, an
  order already paid by another event of the same payment);
- `refused`: an unknown order, an amount or currency that differs from the order, an event that
  comes out of order (paid after expired, expired after paid, a refund of an unpaid order).
  Logged as a warning; nothing is granted.
Every verified event, refused or not, is answered 200: a refusal is final and Stripe and
Coinbase retry any other status for days (Stripe docs, "Webhooks: retries"). A replay (the same
event id again, also 10 at once) finds the stored event and changes nothing.

Concurrency: the event names its order; the order row is locked first (as `order_settle` does),
then the event row is inserted (its unique index makes concurrent deliveries of one event wait
for the first and then find it), then the event is applied, all in one transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Organization
from credits.services.ledger import credits_revoke
from portal.errors import ApplicationError, Conflict, ValidationFailed
from portal.money import CENT, from_cents, to_cents

from ..models import Order, ProviderEvent
from ..providers import ProviderUnavailable, WebhookInvalid
from ..providers import coinbase as coinbase_provider
from ..providers import stripe as stripe_provider
from ..providers.stripe import Checkout
from .documents import billing_profile_of, credit_note_issue, tax_of
from .orders import (
    OrderNotPending,
    PaymentMismatch,
    order_amount_check,
    order_create,
    order_existing,
    order_settle,
    order_status_set,
)

logger = logging.getLogger("billing.webhooks")

STRIPE = Order.Provider.STRIPE
COINBASE = Order.Provider.COINBASE
MANUAL = Order.Provider.MANUAL

# Events that say a payment is under way: an order that had one is not expired by age.
IN_PROGRESS = ("checkout.session.completed", "charge:pending")


class TaxRateChanged(Conflict):
    """409: the organization's tax rate changed while the checkout was made; try again."""

    type = "tax_rate_changed"


def order_page_url(order_or_id, organization: Organization) -> str:
    """The absolute URL of an order's page (PORTAL_BASE_URL, never the request's host)."""
    public_id = getattr(order_or_id, "public_id", order_or_id)
    path = reverse("billing-order", kwargs={"org": organization.slug, "id": public_id})
    return settings.PORTAL_BASE_URL.rstrip("/") + path


def _checkout(
    *, provider: str, organization: Organization, order_id: uuid.UUID, amount, total
) -> Checkout:
    page = order_page_url(order_id, organization)
    if provider == STRIPE:
        # Stripe allows 30 minutes to 24 hours; the session closes before the order expires.
        minutes = min(settings.BILLING_CHECKOUT_MINUTES, settings.BILLING_ORDER_EXPIRE_HOURS * 60)
        minutes = min(max(minutes, 30), 24 * 60)
        return stripe_provider.checkout_session_create(
            order_id=str(order_id),
            amount=amount,
            total=total,
            success_url=f"{page}?checkout=success",
            cancel_url=f"{page}?checkout=cancelled",
            expires_at=timezone.now() + timedelta(minutes=minutes),
            customer_email=organization.billing_email or "",
        )
    if provider == COINBASE:
        return coinbase_provider.charge_create(
            order_id=str(order_id),
            amount=amount,
            total=total,
            redirect_url=f"{page}?checkout=success",
            cancel_url=f"{page}?checkout=cancelled",
        )
    return Checkout(url=page, reference="")  # manual: the order's page says how to pay


def purchase_start(
    *,
    organization: Organization,
    amount,
    provider: str,
    idempotency_key: str | None = None,
    actor: Actor,
) -> tuple[Order, bool]:
    """Buy `amount` credits (USD before tax, a decimal string in whole cents, within
    BILLING_PURCHASE_MIN and _MAX) through `provider` (stripe, coinbase, manual): make the
    provider's checkout, then write the pending order with its `checkout_url` (see the module
    docstring). A retry with the same `idempotency_key` and request answers the first order and
    makes no second checkout. Returns (order, created).

    Raises ValidationFailed (amount, provider, key), IdempotencyConflict, ProviderUnavailable
    (503: nothing written), TaxRateChanged."""
    amount = order_amount_check(amount)
    if provider not in Order.Provider.values:
        raise ValidationFailed({"provider": [f"One of: {', '.join(Order.Provider.values)}."]})
    if idempotency_key is not None:
        existing = order_existing(
            organization=organization,
            idempotency_key=idempotency_key,
            amount=amount,
            provider=provider,
        )
        if existing is not None:
            return existing, False
    total = amount + tax_of(amount, billing_profile_of(organization).tax_rate)
    order_id = uuid.uuid4()
    checkout = _checkout(
        provider=provider, organization=organization, order_id=order_id, amount=amount, total=total
    )
    try:
        with transaction.atomic():
            order, created = order_create(
                organization=organization,
                amount=amount,
                provider=provider,
                idempotency_key=idempotency_key,
                public_id=order_id,
                checkout_url=checkout.url,
                provider_reference=checkout.reference,
                actor=actor,
            )
            if created and order.total != total:
                raise TaxRateChanged("The tax rate changed meanwhile; try again.")
    except IntegrityError:
        # The same idempotency key committed by a concurrent request: answer its order.
        if idempotency_key is None:
            raise
        existing = order_existing(
            organization=organization,
            idempotency_key=idempotency_key,
            amount=amount,
            provider=provider,
        )
        if existing is None:
            raise
        return existing, False
    return order, created


def manual_payment_confirm(*, order: Order, actor: Actor) -> tuple[Order, bool]:
    """A billing member says the bank transfer of a `manual` order arrived: the order is paid
    for its total (`order_settle`: the grant and the paid invoice, once). Raises
    ValidationFailed (not a manual order), OrderNotPending."""
    if order.provider != MANUAL:
        raise ValidationFailed({"order": ["Only a bank-transfer order is confirmed by hand."]})
    return order_settle(order=order, amount_paid=order.total, currency=order.currency, actor=actor)


# Refunds -----------------------------------------------------------------------------------------


def _credits_share(order: Order, refunded: Decimal) -> Decimal:
    """The credits a refund of `refunded` USD (tax included) stands for: its pre-tax share."""
    if refunded >= order.total:
        return order.amount
    return (refunded * order.amount / order.total).quantize(CENT, rounding=ROUND_HALF_EVEN)


def order_refund_record(
    *,
    order: Order,
    refunded_total: Decimal,
    currency: str,
    reference: str = "",
    actor: Actor,
) -> tuple[Order, Decimal]:
    """Record that `refunded_total` USD of a paid order has been refunded so far (a provider's
    cumulative figure, as Stripe's `charge.amount_refunded`): for what is new since the last
    record, issue a credit note (`credit_note_issue`) and take back the credits it stands for
    (its pre-tax share) as far as they are unspent (`credits.services.ledger.credits_revoke`);
    the order is `refunded` once refunded in full. Returns (order, USD newly refunded: 0 when
    nothing is new).

    Raises OrderNotPending (never paid), PaymentMismatch (another currency, more than the
    total)."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        if order.status not in (Order.Status.PAID, Order.Status.REFUNDED):
            raise OrderNotPending(f"Order {order.public_id} is {order.status}, not paid.")
        if currency.upper() != order.currency or refunded_total > order.total:
            raise PaymentMismatch(
                f"Refunded {refunded_total} {currency.upper()} of an order of {order.total} "
                f"{order.currency}."
            )
        new = refunded_total - order.refunded_amount
        if new <= 0:
            return order, Decimal(0)
        take = _credits_share(order, refunded_total) - _credits_share(order, order.refunded_amount)
        _, taken = (
            credits_revoke(
                txn=order.transaction,
                amount=take,
                idempotency_key=f"refund:{order.public_id}:{to_cents(refunded_total)}",
                memo=f"Refund of order {order.public_id}",
                actor=actor,
            )
            if take > 0
            else (None, Decimal(0))
        )
        note = credit_note_issue(
            invoice=order.invoice,
            total=new,
            reason=f"Refund of order {order.public_id}",
            provider_reference=reference,
            actor=actor,
        )
        order.refunded_amount = refunded_total
        if refunded_total == order.total:
            order.status = Order.Status.REFUNDED
        order.updated_at = timezone.now()
        order.save(update_fields=["refunded_amount", "status", "updated_at"])
        audit_record(
            organization=order.organization,
            actor=actor,
            target=order,
            action="order.refunded",
            after={
                "order": order.public_id,
                "refunded": new,
                "refunded_total": refunded_total,
                "credit_note": note.number,
                "credits_taken_back": taken,
            },
        )
    return order, new


# Webhook events ----------------------------------------------------------------------------------

Applied = tuple[str, str]  # (outcome, detail)


def _receive(
    *,
    provider: str,
    event_id: str,
    type_: str,
    payload: dict,
    order: Order | None,
    apply: Callable[[Order], Applied],
    refusal: str = "",
) -> tuple[ProviderEvent, bool]:
    """Store the verified event once and apply it to `order` (None: refused with `refusal`,
    or ignored when `refusal` is empty). Returns (event, new)."""
    with transaction.atomic():
        if order is not None:
            order = Order.objects.select_for_update().get(pk=order.pk)
        existing = ProviderEvent.objects.filter(provider=provider, event_id=event_id).first()
        if existing is not None:
            return existing, False
        try:
            with transaction.atomic():
                event = ProviderEvent.objects.create(
                    provider=provider,
                    event_id=event_id,
                    type=type_[:100],
                    order=order,
                    outcome=ProviderEvent.Outcome.IGNORED,
                    payload=payload,
                )
        except IntegrityError:  # a concurrent delivery without an order committed first
            return ProviderEvent.objects.get(provider=provider, event_id=event_id), False
        if order is None:
            outcome = ProviderEvent.Outcome.REFUSED if refusal else ProviderEvent.Outcome.IGNORED
            detail = refusal or "Not an event the portal uses."
        else:
            try:
                with transaction.atomic():
                    outcome, detail = apply(order)
            except ApplicationError as exc:  # OrderNotPending, PaymentMismatch, ...
                outcome, detail = ProviderEvent.Outcome.REFUSED, exc.message
        event.outcome, event.detail = outcome, detail[:500]
        event.save(update_fields=["outcome", "detail"])
    log = logger.warning if outcome == ProviderEvent.Outcome.REFUSED else logger.info
    log("%s event %s (%s) %s: %s", provider, event_id, type_, outcome, detail)
    return event, True


def _order_by_public_id(value, provider: str) -> Order | None:
    try:
        public_id = uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        return None
    return Order.objects.filter(public_id=public_id, provider=provider).first()


def _settled(order: Order, now: bool) -> Applied:
    if now:
        return ProviderEvent.Outcome.APPLIED, f"Order {order.public_id} paid."
    return ProviderEvent.Outcome.IGNORED, f"Order {order.public_id} was paid already."


def _status(order: Order, status: str, actor: Actor) -> Applied:
    if order.status != Order.Status.PENDING:
        raise OrderNotPending(f"Order {order.public_id} is {order.status}; not made {status}.")
    order_status_set(order=order, status=status, actor=actor)
    return ProviderEvent.Outcome.APPLIED, f"Order {order.public_id} {status}."


def _cents(value) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PaymentMismatch("The event has no amount in cents.")
    return from_cents(value)


def _text(value) -> str:
    return value if isinstance(value, str) else ""


# Stripe


def _stripe_order(type_: str, obj: dict) -> tuple[Order | None, str]:
    """The order an event names, or (None, why it is refused); (None, "") when the event type
    names no order of ours."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    order_id = metadata.get("order_id")
    if type_.startswith("checkout.session."):
        reference = obj.get("client_reference_id")
        if order_id and reference and order_id != reference:
            return None, "client_reference_id and metadata.order_id differ."
        order = _order_by_public_id(order_id or reference, STRIPE)
        if order is None:
            return None, f"No Stripe order {order_id or reference!r}."
        if order.provider_reference and obj.get("id") != order.provider_reference:
            return None, f"Checkout Session {obj.get('id')!r} is not order {order.public_id}'s."
        return order, ""
    if type_.startswith("payment_intent."):
        if not order_id:
            return None, ""  # a PaymentIntent of something else
        order = _order_by_public_id(order_id, STRIPE)
        return (order, "") if order else (None, f"No Stripe order {order_id!r}.")
    if type_ == "charge.refunded":
        intent = _text(obj.get("payment_intent"))
        order = (
            Order.objects.filter(provider=STRIPE, payment_reference=intent).first()
            if intent
            else None
        )
        order = order or (_order_by_public_id(order_id, STRIPE) if order_id else None)
        return (order, "") if order else (None, f"No Stripe order paid by {intent!r}.")
    return None, ""


def _latest_refund(charge: dict) -> str:
    """The id of the newest refund of a Stripe charge (`refunds.data[0].id`), if listed."""
    refunds = charge.get("refunds")
    data = refunds.get("data") if isinstance(refunds, dict) else None
    first = data[0] if isinstance(data, list) and data else None
    return _text(first.get("id")) if isinstance(first, dict) else ""


def _stripe_apply(type_: str, obj: dict, actor: Actor) -> Callable[[Order], Applied]:
    def settle(order: Order, amount_key: str, payment: str) -> Applied:
        amount = _cents(obj.get(amount_key))
        order, now = order_settle(
            order=order,
            amount_paid=amount,
            currency=_text(obj.get("currency")),
            payment_reference=payment,
            actor=actor,
        )
        return _settled(order, now)

    def apply(order: Order) -> Applied:
        if type_ in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
            if obj.get("payment_status") != "paid":
                return ProviderEvent.Outcome.IGNORED, "Payment not made yet (asynchronous)."
            return settle(order, "amount_total", _text(obj.get("payment_intent")))
        if type_ == "checkout.session.async_payment_failed":
            return _status(order, Order.Status.FAILED, actor)
        if type_ == "checkout.session.expired":
            return _status(order, Order.Status.EXPIRED, actor)
        if type_ == "payment_intent.succeeded":
            return settle(order, "amount_received", _text(obj.get("id")))
        if type_ == "payment_intent.payment_failed":
            # A declined card in a Checkout Session may be retried there: only an order paid by
            # this PaymentIntent itself (an off-session top-up) fails with it.
            if order.purpose != Order.Purpose.TOPUP and order.provider_reference != obj.get("id"):
                return ProviderEvent.Outcome.IGNORED, "The Checkout Session stays open."
            return _status(order, Order.Status.FAILED, actor)
        if type_ == "charge.refunded":
            order, new = order_refund_record(
                order=order,
                refunded_total=_cents(obj.get("amount_refunded")),
                currency=_text(obj.get("currency")),
                reference=_latest_refund(obj) or _text(obj.get("id")),
                actor=actor,
            )
            if not new:
                return ProviderEvent.Outcome.IGNORED, "No refund beyond those recorded."
            return ProviderEvent.Outcome.APPLIED, f"Refunded {new} USD of {order.public_id}."
        return ProviderEvent.Outcome.IGNORED, "Not an event the portal uses."

    return apply


STRIPE_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "charge.refunded",
    }
)


def stripe_webhook_receive(*, payload: bytes, signature: str | None) -> tuple[ProviderEvent, bool]:
    """Verify and apply one Stripe webhook request (raw body, `Stripe-Signature`). Returns
    (the stored event, whether it is new). Raises WebhookInvalid (400: nothing stored),
    ProviderUnavailable (webhooks not configured)."""
    event = stripe_provider.webhook_event(payload, signature)
    event_id, type_ = event.get("id"), event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(event_id, str) or not event_id or not isinstance(type_, str):
        raise WebhookInvalid("A Stripe event has a string id and type.")
    if not isinstance(obj, dict) or len(event_id) > 255:
        raise WebhookInvalid("A Stripe event has data.object.")
    actor = Actor(system="stripe")
    order, refusal = _stripe_order(type_, obj) if type_ in STRIPE_EVENTS else (None, "")
    return _receive(
        provider=STRIPE,
        event_id=event_id,
        type_=type_,
        payload=event,
        order=order,
        apply=_stripe_apply(type_, obj, actor),
        refusal=refusal,
    )


# Coinbase Commerce


def _coinbase_paid(charge: dict) -> tuple[Decimal, str]:
    """What a confirmed charge received, in its local currency: the confirmed payments' local
    values when listed, else the charge's local price (the fixed price it was made for)."""
    payments = charge.get("payments") if isinstance(charge.get("payments"), list) else []
    confirmed = [
        p
        for p in payments
        if isinstance(p, dict) and str(p.get("status", "")).lower() == "confirmed"
    ]
    try:
        if confirmed:
            values = [p["value"]["local"] for p in confirmed]
            currencies = {str(v["currency"]).upper() for v in values}
            if len(currencies) != 1:
                raise PaymentMismatch("Payments in several currencies.")
            return sum((Decimal(str(v["amount"])) for v in values), Decimal(0)), currencies.pop()
        local = charge["pricing"]["local"]
        return Decimal(str(local["amount"])), str(local["currency"]).upper()
    except (KeyError, TypeError, ArithmeticError, ValueError):
        raise PaymentMismatch("The charge states no amount paid.") from None


def _coinbase_apply(type_: str, charge: dict, actor: Actor) -> Callable[[Order], Applied]:
    def apply(order: Order) -> Applied:
        if type_ == "charge:confirmed":
            amount, currency = _coinbase_paid(charge)
            if amount != amount.quantize(CENT):
                raise PaymentMismatch(f"Paid {amount} {currency}: not whole cents.")
            order, now = order_settle(
                order=order, amount_paid=amount, currency=currency, actor=actor
            )
            return _settled(order, now)
        if type_ == "charge:failed":
            return _status(order, Order.Status.FAILED, actor)
        if type_ == "charge:pending":
            return ProviderEvent.Outcome.IGNORED, "Payment detected, not confirmed yet."
        return ProviderEvent.Outcome.IGNORED, "Not an event the portal uses."

    return apply


def coinbase_webhook_receive(
    *, payload: bytes, signature: str | None
) -> tuple[ProviderEvent, bool]:
    """Verify and apply one Coinbase Commerce webhook request (raw body,
    `X-CC-Webhook-Signature`). Returns (the stored event, whether it is new). Raises
    WebhookInvalid (400: nothing stored), ProviderUnavailable (webhooks not configured)."""
    body = coinbase_provider.webhook_event(payload, signature)
    event = body.get("event")
    if not isinstance(event, dict):
        raise WebhookInvalid("A Coinbase Commerce webhook has an event object.")
    event_id, type_, charge = event.get("id"), event.get("type"), event.get("data")
    if not isinstance(event_id, str | int) or isinstance(event_id, bool) or not str(event_id):
        raise WebhookInvalid("A Coinbase Commerce event has an id.")
    if not isinstance(type_, str) or not isinstance(charge, dict) or len(str(event_id)) > 255:
        raise WebhookInvalid("A Coinbase Commerce event has a type and a charge.")
    order, refusal = None, ""
    if type_.startswith("charge:"):
        metadata = charge.get("metadata") if isinstance(charge.get("metadata"), dict) else {}
        order = _order_by_public_id(metadata.get("order_id"), COINBASE)
        if order is None:
            refusal = f"No Coinbase Commerce order {metadata.get('order_id')!r}."
        elif order.provider_reference and charge.get("code") != order.provider_reference:
            order, refusal = None, f"Charge {charge.get('code')!r} is not the order's."
    return _receive(
        provider=COINBASE,
        event_id=str(event_id),
        type_=type_,
        payload=body,
        order=order,
        apply=_coinbase_apply(type_, charge, Actor(system="coinbase")),
        refusal=refusal,
    )


# Expiry ------------------------------------------------------------------------------------------


def orders_expire(*, now=None) -> int:
    """Expire purchase orders still pending past their age (card and crypto:
    BILLING_ORDER_EXPIRE_HOURS; bank transfer: BILLING_MANUAL_ORDER_EXPIRE_DAYS), except those
    whose payment is under way (a completed Checkout Session awaiting an asynchronous payment,
    a detected crypto payment). Each through `order_status_set` (locked, audited). Top-up orders
    are left to the top-up's own rules. Returns how many were expired."""
    now = now or timezone.now()
    online = now - timedelta(hours=settings.BILLING_ORDER_EXPIRE_HOURS)
    manual = now - timedelta(days=settings.BILLING_MANUAL_ORDER_EXPIRE_DAYS)
    under_way = ProviderEvent.objects.filter(order=OuterRef("pk"), type__in=IN_PROGRESS)
    due = (
        Order.objects.filter(status=Order.Status.PENDING, purpose=Order.Purpose.PURCHASE)
        .filter(
            Q(provider=MANUAL, created_at__lte=manual)
            | (~Q(provider=MANUAL) & Q(created_at__lte=online))
        )
        .exclude(Exists(under_way))
        .order_by("id")
    )
    count = 0
    actor = Actor(system="orders-expire")
    for order in due:
        if order_status_set(order=order, status=Order.Status.EXPIRED, actor=actor).status == (
            Order.Status.EXPIRED
        ):
            count += 1
    return count


__all__ = [
    "ProviderUnavailable",
    "TaxRateChanged",
    "WebhookInvalid",
    "coinbase_webhook_receive",
    "manual_payment_confirm",
    "order_page_url",
    "order_refund_record",
    "orders_expire",
    "purchase_start",
    "stripe_webhook_receive",
]
