"""Orders: created pending, settled once.

`order_settle` is the one way an order becomes paid, whoever says so (a provider's verified
webhook, a billing member confirming a bank transfer, an off-session charge that succeeded): under
the order's row lock it checks the order is pending and the paid amount and currency match, grants
the credits (`credits_grant`, source `purchase`, idempotency key `order:<public id>`) and issues the
paid invoice, all in one transaction. A second settle of the same order changes nothing.

Lock order: the order row first, then the ledger (`credits_grant`: accounts by id), then the
document sequence, then the organization's audit chain.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Organization
from credits.models import CreditLot
from credits.services.ledger import credits_grant
from credits.services.ledger_core import (
    _check_key,
    _first_result,
    new_idempotency_key,
    request_hash,
)
from portal.errors import Conflict, IdempotencyConflict, ValidationFailed
from portal.money import parse_usd

from ..models import Invoice, Order
from .documents import Line, billing_profile_of, invoice_issue, tax_of


class OrderNotPending(Conflict):
    """409: the order was already paid, failed, expired or refunded."""

    type = "order_not_pending"


class PaymentMismatch(Conflict):
    """409: what the provider says was paid is not what the order asks."""

    type = "payment_mismatch"


def purchase_limits() -> tuple[Decimal, Decimal]:
    """The smallest and largest order, USD (settings.BILLING_PURCHASE_MIN / _MAX)."""
    return (
        parse_usd(settings.BILLING_PURCHASE_MIN, field="BILLING_PURCHASE_MIN"),
        parse_usd(settings.BILLING_PURCHASE_MAX, field="BILLING_PURCHASE_MAX"),
    )


def order_amount_check(amount) -> Decimal:
    """Parse an order amount (USD = credits, a decimal string in whole cents) within the limits.
    Raises ValidationFailed."""
    amount = parse_usd(amount)
    low, high = purchase_limits()
    if not low <= amount <= high:
        raise ValidationFailed({"amount": [f"Between {low} and {high} USD."]})
    return amount


def _order_digest(*, amount: Decimal, provider: str, purpose: str) -> str:
    return request_hash(op="order", amount=amount, provider=provider, purpose=purpose)


def order_existing(
    *,
    organization: Organization,
    idempotency_key: str,
    amount: Decimal,
    provider: str,
    purpose: str = Order.Purpose.PURCHASE,
) -> Order | None:
    """The order an earlier request with `idempotency_key` made, or None. Raises
    IdempotencyConflict when that request was another (amount, provider, purpose),
    ValidationFailed for a blank or too long key."""
    digest = _order_digest(amount=amount, provider=provider, purpose=purpose)
    return _first_result(Order, organization.pk, _check_key(idempotency_key), digest)


@transaction.atomic
def order_create(
    *,
    organization: Organization,
    amount,
    provider: str,
    purpose: str = Order.Purpose.PURCHASE,
    idempotency_key: str | None = None,
    public_id: uuid.UUID | None = None,
    checkout_url: str = "",
    provider_reference: str = "",
    actor: Actor,
) -> tuple[Order, bool]:
    """Create a pending order of `amount` credits (USD before tax; the organization's tax rate
    is added to `total`). A retry with the same idempotency key and request answers the first
    order. Returns (order, created). A caller that made the provider's checkout first (so that
    a provider that is down leaves no order: `billing.services.payments.purchase_start`) gives
    the order's `public_id`, `checkout_url` and `provider_reference` here.

    Raises ValidationFailed (amount outside the limits, unknown provider or purpose),
    IdempotencyConflict."""
    amount = order_amount_check(amount)
    if provider not in Order.Provider.values:
        raise ValidationFailed({"provider": [f"One of: {', '.join(Order.Provider.values)}."]})
    if purpose not in Order.Purpose.values:
        raise ValidationFailed({"purpose": [f"One of: {', '.join(Order.Purpose.values)}."]})
    digest = _order_digest(amount=amount, provider=provider, purpose=purpose)
    if idempotency_key is not None:
        key = _check_key(idempotency_key)
        existing = _first_result(Order, organization.pk, key, digest)
        if existing is not None:
            return existing, False
    else:
        key = new_idempotency_key()
    profile = billing_profile_of(organization)
    tax = tax_of(amount, profile.tax_rate)
    order = Order.objects.create(
        organization=organization,
        amount=amount,
        tax_rate=profile.tax_rate,
        tax=tax,
        total=amount + tax,
        provider=provider,
        purpose=purpose,
        idempotency_key=key,
        request_hash=digest,
        created_by=actor.user,
        checkout_url=checkout_url,
        provider_reference=provider_reference,
        **({"public_id": public_id} if public_id is not None else {}),
    )
    audit_record(
        organization=organization,
        actor=actor,
        target=order,
        action="order.created",
        after={"order": order.public_id, "amount": amount, "total": order.total},
    )
    return order, True


def order_settle(
    *,
    order: Order,
    amount_paid: Decimal,
    currency: str,
    provider_reference: str = "",
    payment_reference: str = "",
    actor: Actor,
) -> tuple[Order, bool]:
    """Mark `order` paid for `amount_paid` `currency` (USD incl. tax), grant its credits and issue
    its paid invoice, once; `payment_reference` names the payment (a Stripe PaymentIntent, for
    refunds). Returns (order, settled_now); a repeat for a paid order answers
    (order, False) and changes nothing.

    Raises OrderNotPending (failed, expired or refunded), PaymentMismatch (amount or currency
    differ from the order's total)."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        if order.status == Order.Status.PAID:
            return order, False
        if order.status != Order.Status.PENDING:
            raise OrderNotPending(f"Order {order.public_id} is {order.status}.")
        if currency.upper() != order.currency or amount_paid != order.total:
            raise PaymentMismatch(
                f"Paid {amount_paid} {currency.upper()}, the order asks {order.total} "
                f"{order.currency}."
            )
        organization = order.organization
        txn = credits_grant(
            organization=organization,
            amount=order.amount,
            source=CreditLot.Source.PURCHASE,
            memo=f"Order {order.public_id}",
            idempotency_key=f"order:{order.public_id}",
            actor=actor,
        )
        now = timezone.now()
        order.status = Order.Status.PAID
        order.transaction = txn
        order.paid_at = now
        order.updated_at = now
        if provider_reference:
            order.provider_reference = provider_reference
        if payment_reference:
            order.payment_reference = payment_reference
        order.save(
            update_fields=[
                "status",
                "transaction",
                "paid_at",
                "updated_at",
                "provider_reference",
                "payment_reference",
            ]
        )
        invoice_issue(
            organization=organization,
            lines=[
                Line(
                    description=f"AI credits · {order.get_provider_display()}",
                    quantity=order.amount,
                    unit_price=Decimal("1.00"),
                )
            ],
            order=order,
            status=Invoice.Status.PAID,
            actor=actor,
        )
        audit_record(
            organization=organization,
            actor=actor,
            target=order,
            action="order.paid",
            after={"order": order.public_id, "total": order.total, "transaction": txn.pk},
        )
    return order, True


def order_status_set(*, order: Order, status: str, actor: Actor) -> Order:
    """Move a pending order to `failed` or `expired` (a provider said so, or it timed out).
    A paid or refunded order is left as it is (an out-of-order event); raises
    ValidationFailed for another target status."""
    if status not in (Order.Status.FAILED, Order.Status.EXPIRED):
        raise ValidationFailed({"status": ["failed or expired."]})
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        if order.status != Order.Status.PENDING:
            return order
        order.status = status
        order.updated_at = timezone.now()
        order.save(update_fields=["status", "updated_at"])
        audit_record(
            organization=order.organization,
            actor=actor,
            target=order,
            action=f"order.{status}",
            after={"order": order.public_id},
        )
    return order


__all__ = [
    "IdempotencyConflict",
    "OrderNotPending",
    "PaymentMismatch",
    "order_amount_check",
    "order_create",
    "order_existing",
    "order_settle",
    "order_status_set",
    "purchase_limits",
]
