"""Provider webhooks delivered many times at once (real threads, each with its own connection,
on real PostgreSQL): an order is paid, its lot granted and its invoice issued exactly once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client

from billing.models import Invoice, Order, ProviderEvent
from billing.services.orders import order_create
from credits.models import CreditLot, LedgerAccount
from credits.verify import ledger_verify

from ..conftest import SYSTEM
from .conftest import (
    charge_paid,
    coinbase_event,
    coinbase_signed,
    session_completed,
    stripe_event,
    stripe_signed,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("many_connections"),
]


def in_threads(count: int, work) -> list:
    """`work(i)` in `count` threads released together; each closes its own connection."""
    barrier = threading.Barrier(count)

    def run(i: int):
        try:
            barrier.wait(timeout=30)
            return work(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def post_stripe(body: bytes, signature: str):
    response = Client().post(
        "/api/v1/billing/webhooks/stripe",
        body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature,
    )
    return response.status_code, response.json().get("outcome")


def assert_paid_once(tenant, order: Order) -> None:
    order.refresh_from_db()
    assert order.status == Order.Status.PAID
    lots = CreditLot.objects.filter(organization=tenant.org, source=CreditLot.Source.PURCHASE)
    assert [lot.original_amount for lot in lots] == [order.amount]
    assert Invoice.objects.filter(organization=tenant.org).count() == 1
    pool = LedgerAccount.objects.get(organization=tenant.org, kind=LedgerAccount.Kind.POOL)
    assert pool.balance == order.amount
    assert ledger_verify() == []


def test_one_stripe_event_ten_times_at_once_grants_once(tenant, stripe_server):
    _, secret = tenant.key("management")
    order_id = (
        tenant.client(secret)
        .post("/api/v1/credits/purchase", {"amount": "25.00", "provider": "stripe"}, format="json")
        .json()["id"]
    )
    event = stripe_event(
        "checkout.session.completed", session_completed(stripe_server.last_session())
    )
    body, signature = stripe_signed(event)

    outcomes = in_threads(10, lambda i: post_stripe(body, signature))

    assert outcomes == [(200, "applied")] * 10
    assert ProviderEvent.objects.filter(event_id=event["id"]).count() == 1
    assert_paid_once(tenant, Order.objects.get(public_id=order_id))


def test_different_events_of_one_payment_at_once_grant_once(tenant, stripe_server):
    """checkout.session.completed and payment_intent.succeeded of one payment, each delivered
    five times, all at once: one of them pays the order, the rest find it paid."""
    _, secret = tenant.key("management")
    order_id = (
        tenant.client(secret)
        .post("/api/v1/credits/purchase", {"amount": "12.34", "provider": "stripe"}, format="json")
        .json()["id"]
    )
    completed = session_completed(stripe_server.last_session())
    intent = {
        "id": completed["payment_intent"],
        "object": "payment_intent",
        "amount_received": 1234,
        "currency": "usd",
        "metadata": {"order_id": order_id},
    }
    signed = [
        stripe_signed(stripe_event("checkout.session.completed", completed)),
        stripe_signed(stripe_event("payment_intent.succeeded", intent)),
    ]

    outcomes = in_threads(10, lambda i: post_stripe(*signed[i % 2]))

    assert sorted(outcomes) == [(200, "applied")] * 5 + [(200, "ignored")] * 5, outcomes
    assert ProviderEvent.objects.count() == 2
    assert sorted(ProviderEvent.objects.values_list("outcome", flat=True)) == [
        "applied",
        "ignored",
    ]
    assert_paid_once(tenant, Order.objects.get(public_id=order_id))


def test_one_coinbase_event_ten_times_at_once_grants_once(tenant, coinbase_server):
    _, secret = tenant.key("management")
    order_id = (
        tenant.client(secret)
        .post("/api/v1/credits/purchase", {"amount": "50", "provider": "coinbase"}, format="json")
        .json()["id"]
    )
    raw, signature = coinbase_signed(
        coinbase_event("charge:confirmed", charge_paid(coinbase_server.last_charge()))
    )

    def deliver(i):
        response = Client().post(
            "/api/v1/billing/webhooks/coinbase",
            raw,
            content_type="application/json",
            HTTP_X_CC_WEBHOOK_SIGNATURE=signature,
        )
        return response.status_code

    assert in_threads(10, deliver) == [200] * 10
    assert ProviderEvent.objects.count() == 1
    assert_paid_once(tenant, Order.objects.get(public_id=order_id))


def test_ten_events_for_an_unknown_order_at_once_store_one(tenant, stripe_server):
    obj = {
        "id": "cs_test_unknown",
        "object": "checkout.session",
        "payment_status": "paid",
        "amount_total": 100,
        "currency": "usd",
        "metadata": {"order_id": "6d0f3f3e-0000-4000-8000-000000000000"},
    }
    body, signature = stripe_signed(stripe_event("checkout.session.completed", obj))
    assert in_threads(10, lambda i: post_stripe(body, signature)) == [(200, "refused")] * 10
    assert ProviderEvent.objects.count() == 1
    assert not CreditLot.objects.exists()


def test_manual_confirmations_at_once_grant_once(tenant):
    from billing.services.payments import manual_payment_confirm

    order, _ = order_create(
        organization=tenant.org, amount=Decimal("30"), provider="manual", actor=SYSTEM
    )

    def confirm(i):
        return manual_payment_confirm(order=order, actor=SYSTEM)[1]

    assert sorted(in_threads(10, confirm)) == [False] * 9 + [True]
    assert_paid_once(tenant, order)
