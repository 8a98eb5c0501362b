"""Orders are settled once: the grant, the paid invoice and the order's status move together."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.models import Invoice, Order
from billing.services.documents import billing_profile_of
from billing.services.orders import (
    OrderNotPending,
    PaymentMismatch,
    order_create,
    order_settle,
    order_status_set,
)
from credits.models import CreditLot, LedgerAccount
from portal.errors import IdempotencyConflict, ValidationFailed
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db


def test_settle_grants_once_and_issues_the_paid_invoice(tenant):
    profile = billing_profile_of(tenant.org)
    profile.tax_rate = Decimal("20")
    profile.save()
    order, created = order_create(
        organization=tenant.org, amount="25.00", provider="manual", actor=SYSTEM
    )
    assert created and order.total == Decimal("30.00") and order.tax == Decimal("5.00")

    with pytest.raises(PaymentMismatch):
        order_settle(order=order, amount_paid=Decimal("25.00"), currency="usd", actor=SYSTEM)
    settled, now = order_settle(
        order=order, amount_paid=Decimal("30.00"), currency="usd", actor=SYSTEM
    )
    again, second = order_settle(
        order=order, amount_paid=Decimal("30.00"), currency="usd", actor=SYSTEM
    )

    assert (now, second) == (True, False)
    assert settled.status == again.status == Order.Status.PAID
    assert CreditLot.objects.filter(organization=tenant.org, source="purchase").count() == 1
    assert LedgerAccount.objects.get(organization=tenant.org, kind="pool").balance == 25
    invoice = Invoice.objects.get(order=order)
    assert invoice.number == f"ACME-{invoice.issued_at.year}-0001"
    assert (invoice.subtotal, invoice.tax, invoice.total) == (
        Decimal("25.00"),
        Decimal("5.00"),
        Decimal("30.00"),
    )
    assert invoice.status == Invoice.Status.PAID
    assert [line.amount for line in invoice.lines.all()] == [Decimal("25.00")]


def test_a_failed_order_is_never_settled(tenant):
    order, _ = order_create(organization=tenant.org, amount="10", provider="stripe", actor=SYSTEM)
    order_status_set(order=order, status="failed", actor=SYSTEM)
    with pytest.raises(OrderNotPending):
        order_settle(order=order, amount_paid=Decimal("10.00"), currency="USD", actor=SYSTEM)
    assert not CreditLot.objects.filter(organization=tenant.org).exists()


@pytest.mark.parametrize("amount", ["4.99", "10000.01", "10.001", "-5", "abc"])
def test_amounts_outside_the_limits_write_nothing(tenant, amount):
    with pytest.raises(ValidationFailed):
        order_create(organization=tenant.org, amount=amount, provider="manual", actor=SYSTEM)
    assert not Order.objects.exists()


def test_idempotent_create(tenant):
    first, _ = order_create(
        organization=tenant.org, amount="10", provider="manual", idempotency_key="k1", actor=SYSTEM
    )
    again, created = order_create(
        organization=tenant.org, amount="10", provider="manual", idempotency_key="k1", actor=SYSTEM
    )
    assert again.pk == first.pk and not created
    with pytest.raises(IdempotencyConflict):
        order_create(
            organization=tenant.org,
            amount="11",
            provider="manual",
            idempotency_key="k1",
            actor=SYSTEM,
        )
