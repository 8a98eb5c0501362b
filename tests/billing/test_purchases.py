"""Purchases end to end against loopback Stripe and Coinbase Commerce servers: purchase ->
checkout -> signed webhook -> lot granted and invoice issued; replays; refunds; providers that
are down; bad input and bad webhooks write nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from decimal import Decimal

import pytest
from django.test import Client

from accounts.models import AuditEvent
from billing.models import CreditNote, Invoice, Order, ProviderEvent
from billing.services.documents import billing_profile_of
from billing.services.orders import order_create
from billing.services.payments import orders_expire
from billing.tasks import orders_expire as expire_task
from credits.models import CreditLot, LedgerAccount, LedgerTransaction
from credits.services.ledger import credits_revoke, ledger_debit
from credits.services.ledger_core import system_account
from credits.verify import ledger_verify
from portal.errors import ValidationFailed

from ..conftest import SYSTEM
from .conftest import (
    charge_paid,
    coinbase_event,
    coinbase_signed,
    session_completed,
    stripe_event,
    stripe_signed,
)

pytestmark = pytest.mark.django_db

STRIPE_HOOK = "/api/v1/billing/webhooks/stripe"
COINBASE_HOOK = "/api/v1/billing/webhooks/coinbase"


@pytest.fixture
def api(tenant):
    _, secret = tenant.key("management")
    return tenant.client(secret)


def buy(api, amount="25.00", provider="stripe", **headers):
    return api.post(
        "/api/v1/credits/purchase",
        {"amount": amount, "provider": provider},
        format="json",
        **headers,
    )


def deliver_stripe(event: dict, **kwargs):
    body, signature = stripe_signed(event, **kwargs)
    return Client().post(
        STRIPE_HOOK, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature
    )


def deliver_coinbase(body: dict, **kwargs):
    raw, signature = coinbase_signed(body, **kwargs)
    return Client().post(
        COINBASE_HOOK, raw, content_type="application/json", HTTP_X_CC_WEBHOOK_SIGNATURE=signature
    )


def pool(tenant) -> LedgerAccount:
    return LedgerAccount.objects.get(organization=tenant.org, kind=LedgerAccount.Kind.POOL)


def purchase_lots(tenant):
    return CreditLot.objects.filter(organization=tenant.org, source=CreditLot.Source.PURCHASE)


def written(tenant) -> dict:
    """What a refused request must leave as it was."""
    return {
        "orders": Order.objects.count(),
        "events": ProviderEvent.objects.count(),
        "lots": CreditLot.objects.filter(organization=tenant.org).count(),
        "invoices": Invoice.objects.count(),
        "audit": AuditEvent.objects.filter(organization=tenant.org).count(),
    }


# Stripe ------------------------------------------------------------------------------------------


def test_stripe_purchase_checkout_webhook_grants_once_and_invoices(tenant, api, stripe_server):
    profile = billing_profile_of(tenant.org)
    profile.tax_rate = Decimal("20")
    profile.save()

    response = buy(api, "25.00")

    assert response.status_code == 201, response.content
    body = response.json()
    order = Order.objects.get(public_id=body["id"])
    assert {k: body[k] for k in ("status", "amount", "tax", "total", "currency", "provider")} == {
        "status": "pending",
        "amount": "25.00",
        "tax": "5.00",
        "total": "30.00",
        "currency": "USD",
        "provider": "stripe",
    }
    session = stripe_server.last_session()
    assert body["checkout_url"] == session["url"] == order.checkout_url
    assert order.provider_reference == session["id"]
    params = session["_params"]
    assert params["mode"] == "payment"
    assert params["client_reference_id"] == params["metadata"]["order_id"] == body["id"]
    assert params["payment_intent_data"]["metadata"]["order_id"] == body["id"]
    assert params["line_items"][0]["price_data"] == {
        "currency": "usd",
        "unit_amount": "3000",
        "product_data": {"name": "25.00 AI credits"},
    }
    page = f"/o/{tenant.org.slug}/billing/orders/{body['id']}/"
    assert params["success_url"].endswith(page + "?checkout=success")
    assert params["cancel_url"].endswith(page + "?checkout=cancelled")
    assert stripe_server.requests[-1]["headers"]["idempotency-key"] == f"checkout:{body['id']}"
    assert abs(int(params["expires_at"]) - (time.time() + 3600)) < 120  # BILLING_CHECKOUT_MINUTES
    assert not purchase_lots(tenant).exists()

    event = stripe_event("checkout.session.completed", session_completed(session))
    first = deliver_stripe(event)
    again = deliver_stripe(event)

    assert first.status_code == again.status_code == 200
    assert first.json() == {
        "received": True,
        "event": event["id"],
        "outcome": "applied",
        "replay": False,
    }
    assert again.json()["replay"] is True and again.json()["outcome"] == "applied"
    order.refresh_from_db()
    assert order.status == Order.Status.PAID and order.paid_at is not None
    assert order.payment_reference == session_completed(session)["payment_intent"]
    assert [lot.original_amount for lot in purchase_lots(tenant)] == [Decimal("25")]
    assert pool(tenant).balance == 25
    invoice = Invoice.objects.get(order=order)
    assert (invoice.status, invoice.subtotal, invoice.tax, invoice.total) == (
        "paid",
        Decimal("25.00"),
        Decimal("5.00"),
        Decimal("30.00"),
    )
    assert ProviderEvent.objects.get(event_id=event["id"]).outcome == "applied"

    # The PaymentIntent's own event for the same payment: the order is paid already.
    intent = {
        "id": order.payment_reference,
        "object": "payment_intent",
        "amount_received": 3000,
        "currency": "usd",
        "metadata": {"order_id": body["id"]},
    }
    response = deliver_stripe(stripe_event("payment_intent.succeeded", intent))
    assert response.json()["outcome"] == "ignored"
    assert purchase_lots(tenant).count() == 1 and Invoice.objects.count() == 1

    shown = api.get(f"/api/v1/billing/orders/{body['id']}").json()
    assert shown["status"] == "paid" and shown["invoice"] == invoice.number
    listed = api.get("/api/v1/billing/orders").json()
    assert [row["id"] for row in listed["results"]] == [body["id"]]


def test_idempotency_key_answers_the_first_order_and_makes_one_checkout(api, stripe_server):
    first = buy(api, "10", HTTP_IDEMPOTENCY_KEY="buy-1")
    again = buy(api, "10", HTTP_IDEMPOTENCY_KEY="buy-1")
    other = buy(api, "11", HTTP_IDEMPOTENCY_KEY="buy-1")

    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert len(stripe_server.sessions) == 1
    assert other.status_code == 409
    assert other.json()["error"]["metadata"]["type"] == "idempotency_conflict"
    assert Order.objects.count() == 1


@pytest.mark.parametrize(
    "change, why",
    [
        ({"amount_total": 2400}, "Paid 24.00 USD"),
        ({"currency": "eur"}, "EUR"),
        ({"client_reference_id": "6d0f3f3e-0000-4000-8000-000000000000"}, "differ"),
        ({"id": "cs_test_someone_elses"}, "is not order"),
    ],
)
def test_a_mismatched_checkout_is_refused_and_grants_nothing(
    tenant, api, stripe_server, change, why
):
    order_id = buy(api, "25").json()["id"]
    event = stripe_event(
        "checkout.session.completed", session_completed(stripe_server.last_session(), **change)
    )

    response = deliver_stripe(event)

    assert response.status_code == 200 and response.json()["outcome"] == "refused"
    stored = ProviderEvent.objects.get(event_id=event["id"])
    assert why in stored.detail, stored.detail
    assert Order.objects.get(public_id=order_id).status == "pending"
    assert not purchase_lots(tenant).exists() and not Invoice.objects.exists()


def test_an_unknown_order_is_refused_and_stored_once(tenant, stripe_server, caplog):
    obj = {
        "id": "cs_test_x",
        "object": "checkout.session",
        "payment_status": "paid",
        "amount_total": 1000,
        "currency": "usd",
        "metadata": {"order_id": "6d0f3f3e-0000-4000-8000-000000000000"},
    }
    event = stripe_event("checkout.session.completed", obj)

    assert deliver_stripe(event).json()["outcome"] == "refused"
    assert deliver_stripe(event).json() == {
        "received": True,
        "event": event["id"],
        "outcome": "refused",
        "replay": True,
    }
    assert ProviderEvent.objects.filter(event_id=event["id"]).count() == 1
    assert not CreditLot.objects.exists()
    logged = [r for r in caplog.records if r.name == "billing.webhooks"]
    assert [r.levelname for r in logged] == ["WARNING"]  # the refusal, once (not the replay)
    assert "refused: No Stripe order" in logged[0].getMessage()


def test_out_of_order_events_are_refused(tenant, api, stripe_server):
    """Expired, then paid: the payment is refused (nothing granted); paid, then expired: the
    expiry is refused (the order stays paid)."""
    expired_id = buy(api, "10").json()["id"]
    expired_session = stripe_server.last_session()
    assert (
        deliver_stripe(
            stripe_event(
                "checkout.session.expired",
                {
                    **session_completed(expired_session),
                    "status": "expired",
                    "payment_status": "unpaid",
                },
            )
        ).json()["outcome"]
        == "applied"
    )
    late = deliver_stripe(
        stripe_event("checkout.session.completed", session_completed(expired_session))
    )
    assert late.json()["outcome"] == "refused"
    assert Order.objects.get(public_id=expired_id).status == "expired"

    paid_id = buy(api, "12").json()["id"]
    paid_session = stripe_server.last_session()
    deliver_stripe(stripe_event("checkout.session.completed", session_completed(paid_session)))
    expiry = deliver_stripe(
        stripe_event("checkout.session.expired", session_completed(paid_session))
    )
    assert expiry.json()["outcome"] == "refused"
    assert Order.objects.get(public_id=paid_id).status == "paid"
    assert [lot.original_amount for lot in purchase_lots(tenant)] == [Decimal("12")]


def test_asynchronous_payment_waits_then_settles_or_fails(tenant, api, stripe_server):
    order_id = buy(api, "10").json()["id"]
    session = stripe_server.last_session()
    unpaid = session_completed(session, payment_status="unpaid")
    assert (
        deliver_stripe(stripe_event("checkout.session.completed", unpaid)).json()["outcome"]
        == "ignored"
    )
    assert Order.objects.get(public_id=order_id).status == "pending"
    succeeded = deliver_stripe(
        stripe_event("checkout.session.async_payment_succeeded", session_completed(session))
    )
    assert succeeded.json()["outcome"] == "applied"
    assert Order.objects.get(public_id=order_id).status == "paid"

    failed_id = buy(api, "11").json()["id"]
    session = stripe_server.last_session()
    deliver_stripe(
        stripe_event(
            "checkout.session.async_payment_failed",
            session_completed(session, payment_status="unpaid"),
        )
    )
    assert Order.objects.get(public_id=failed_id).status == "failed"
    assert purchase_lots(tenant).count() == 1


def test_off_session_payment_intents_settle_through_order_settle(tenant, stripe_server):
    """An automatic top-up's PaymentIntent names its order in metadata.order_id."""
    paid, _ = order_create(
        organization=tenant.org,
        amount="20",
        provider="stripe",
        purpose="topup",
        provider_reference="pi_topup_1",
        actor=SYSTEM,
    )
    declined, _ = order_create(
        organization=tenant.org,
        amount="20",
        provider="stripe",
        purpose="topup",
        provider_reference="pi_topup_2",
        actor=SYSTEM,
    )

    def intent(order, **extra):
        return {
            "id": order.provider_reference,
            "object": "payment_intent",
            "amount_received": 2000,
            "currency": "usd",
            "metadata": {"order_id": str(order.public_id)},
            **extra,
        }

    assert (
        deliver_stripe(stripe_event("payment_intent.succeeded", intent(paid))).json()["outcome"]
        == "applied"
    )
    assert (
        deliver_stripe(stripe_event("payment_intent.payment_failed", intent(declined))).json()[
            "outcome"
        ]
        == "applied"
    )
    paid.refresh_from_db()
    declined.refresh_from_db()
    assert (paid.status, paid.payment_reference, declined.status) == (
        "paid",
        "pi_topup_1",
        "failed",
    )
    assert purchase_lots(tenant).count() == 1
    # A PaymentIntent of something else (no order_id) is ignored.
    other = {"id": "pi_other", "object": "payment_intent", "amount_received": 5, "metadata": {}}
    assert (
        deliver_stripe(stripe_event("payment_intent.succeeded", other)).json()["outcome"]
        == "ignored"
    )


def test_a_declined_card_in_checkout_leaves_the_session_open(tenant, api, stripe_server):
    order_id = buy(api, "10").json()["id"]
    intent = {
        "id": "pi_checkout",
        "object": "payment_intent",
        "currency": "usd",
        "metadata": {"order_id": order_id},
    }
    response = deliver_stripe(stripe_event("payment_intent.payment_failed", intent))
    assert response.json()["outcome"] == "ignored"
    assert Order.objects.get(public_id=order_id).status == "pending"


# Refunds -----------------------------------------------------------------------------------------


def paid_stripe_order(api, stripe_server, amount="25.00") -> Order:
    order_id = buy(api, amount).json()["id"]
    deliver_stripe(
        stripe_event("checkout.session.completed", session_completed(stripe_server.last_session()))
    )
    return Order.objects.get(public_id=order_id)


@pytest.mark.parametrize(("at_order", "at_payment"), [("19", "7"), ("0", "19")])
def test_the_invoice_is_taxed_as_the_order_its_buyer_paid(
    tenant, api, stripe_server, at_order, at_payment
):
    profile = billing_profile_of(tenant.org)
    profile.tax_rate = Decimal(at_order)
    profile.save()
    order_id = buy(api, "40.00").json()["id"]
    profile.tax_rate = Decimal(at_payment)  # changed while the buyer pays
    profile.save()

    deliver_stripe(
        stripe_event("checkout.session.completed", session_completed(stripe_server.last_session()))
    )

    order = Order.objects.get(public_id=order_id)
    invoice = Invoice.objects.get(order=order)
    assert order.status == "paid"
    assert (invoice.tax_rate, invoice.tax, invoice.total) == (
        order.tax_rate, order.tax, order.total
    )  # fmt: skip
    assert invoice.tax_rate == Decimal(at_order)


def refund(stripe_server, order: Order, cents: int) -> dict:
    """Refund through Stripe's API (the library against the loopback), then the charge as
    `charge.refunded` reports it: the cumulative `amount_refunded`."""
    from billing.providers.stripe_api import stripe_client

    made = stripe_client().v1.refunds.create(
        params={"payment_intent": order.payment_reference, "amount": cents}
    )
    return {
        "id": f"ch_{order.payment_reference[3:]}",
        "object": "charge",
        "payment_intent": order.payment_reference,
        "currency": "usd",
        "amount": int(order.total * 100),
        "refunded": True,
        "amount_refunded": stripe_server.refunds[order.payment_reference],
        "refunds": {"object": "list", "data": [{"id": made["id"], "amount": cents}]},
        "metadata": {},
    }


def test_refunds_issue_credit_notes_and_take_back_what_is_unspent(tenant, api, stripe_server):
    profile = billing_profile_of(tenant.org)
    profile.tax_rate = Decimal("20")
    profile.save()
    order = paid_stripe_order(api, stripe_server, "25.00")  # 30.00 charged, 25 credits
    ledger_debit(account=pool(tenant), amount="20", idempotency_key="spend-1", digest="d")

    partial = stripe_event("charge.refunded", refund(stripe_server, order, 600))
    assert deliver_stripe(partial).json()["outcome"] == "applied"
    order.refresh_from_db()
    assert (order.status, order.refunded_amount) == ("paid", Decimal("6.00"))
    assert pool(tenant).balance == 0  # 5 unspent of the 5.00 credits 6.00 USD stands for

    full = stripe_event("charge.refunded", refund(stripe_server, order, 2400))
    assert deliver_stripe(full).json()["outcome"] == "applied"
    assert deliver_stripe(full).json()["replay"] is True
    order.refresh_from_db()
    assert (order.status, order.refunded_amount) == ("refunded", Decimal("30.00"))
    notes = CreditNote.objects.filter(invoice__order=order).order_by("id")
    assert [(n.total, n.subtotal, n.tax) for n in notes] == [
        (Decimal("6.00"), Decimal("5.00"), Decimal("1.00")),
        (Decimal("24.00"), Decimal("20.00"), Decimal("4.00")),
    ]
    assert notes[0].provider_reference.startswith("re_")
    revocations = LedgerTransaction.objects.filter(
        organization=tenant.org, kind="reversal", metadata__revokes=order.transaction_id
    )
    assert [r.metadata["taken"] for r in revocations] == ["5.000000000000"]
    assert pool(tenant).balance == 0
    purchases = system_account(tenant.org, LedgerAccount.Kind.PURCHASES)
    assert purchases.balance == -20  # 25 came in, 5 went back
    assert ledger_verify() == []
    # A charge.refunded with nothing new (an older figure, delivered late): nothing more.
    stale = stripe_event("charge.refunded", {**full["data"]["object"], "amount_refunded": 600})
    assert deliver_stripe(stale).json()["outcome"] == "ignored"
    assert CreditNote.objects.count() == 2


def test_an_unspent_purchase_refunded_in_full_leaves_nothing(tenant, api, stripe_server):
    order = paid_stripe_order(api, stripe_server, "40.00")
    deliver_stripe(stripe_event("charge.refunded", refund(stripe_server, order, 4000)))
    assert pool(tenant).balance == 0
    lot = purchase_lots(tenant).get()
    assert lot.remaining == 0
    order.refresh_from_db()
    assert order.status == "refunded"
    assert AuditEvent.objects.filter(organization=tenant.org, action="credits.revoked").exists()
    assert AuditEvent.objects.filter(organization=tenant.org, action="order.refunded").exists()


def test_a_refund_of_an_unpaid_order_or_too_much_is_refused(tenant, api, stripe_server):
    order_id = buy(api, "10").json()["id"]
    charge = {
        "id": "ch_x",
        "object": "charge",
        "payment_intent": "pi_x",
        "currency": "usd",
        "amount_refunded": 1000,
        "metadata": {"order_id": order_id},
    }
    assert deliver_stripe(stripe_event("charge.refunded", charge)).json()["outcome"] == "refused"
    order = paid_stripe_order(api, stripe_server, "10.00")
    charge = {**charge, "payment_intent": order.payment_reference, "amount_refunded": 1001}
    assert deliver_stripe(stripe_event("charge.refunded", charge)).json()["outcome"] == "refused"
    assert not CreditNote.objects.exists()


def test_credits_revoke_takes_at_most_what_the_pool_has_free(tenant):
    txn = tenant.grant("10", source="purchase")
    tenant.allocate("4")
    taken = credits_revoke(txn=txn, amount="8", idempotency_key="r1", actor=SYSTEM)
    assert taken[1] == Decimal("6")  # 4 went to a team: they stay there
    again = credits_revoke(txn=txn, amount="8", idempotency_key="r1", actor=SYSTEM)
    assert again[0].pk == taken[0].pk and again[1] == Decimal("6")
    assert credits_revoke(txn=txn, amount="1", idempotency_key="r2", actor=SYSTEM) == (
        None,
        Decimal(0),
    )
    with pytest.raises(ValidationFailed):
        credits_revoke(txn=taken[0], amount="1", idempotency_key="r3", actor=SYSTEM)


# Coinbase Commerce -------------------------------------------------------------------------------


def test_coinbase_purchase_charge_webhook_grants_once(tenant, api, coinbase_server):
    response = buy(api, "50.00", "coinbase")
    assert response.status_code == 201, response.content
    body = response.json()
    charge = coinbase_server.last_charge()
    assert body["checkout_url"] == charge["hosted_url"]
    assert charge["pricing"]["local"] == {"amount": "50.00", "currency": "USD"}
    assert charge["metadata"] == {"order_id": body["id"]}
    request = coinbase_server.requests[-1]
    assert request["headers"]["x-cc-version"] == "2018-03-22"
    order = Order.objects.get(public_id=body["id"])
    assert order.provider_reference == charge["code"]

    pending = deliver_coinbase(coinbase_event("charge:pending", charge))
    assert pending.json()["outcome"] == "ignored"
    assert Order.objects.get(pk=order.pk).status == "pending"
    confirmed = coinbase_event("charge:confirmed", charge_paid(charge))
    assert deliver_coinbase(confirmed).json()["outcome"] == "applied"
    assert deliver_coinbase(confirmed).json()["replay"] is True

    order.refresh_from_db()
    assert order.status == "paid"
    assert [lot.original_amount for lot in purchase_lots(tenant)] == [Decimal("50")]
    assert Invoice.objects.get(order=order).total == Decimal("50.00")


def test_coinbase_underpaid_or_failed_charges_grant_nothing(tenant, api, coinbase_server):
    order_id = buy(api, "50.00", "coinbase").json()["id"]
    charge = charge_paid(coinbase_server.last_charge())
    charge["payments"][0]["value"]["local"]["amount"] = "49.99"
    assert (
        deliver_coinbase(coinbase_event("charge:confirmed", charge)).json()["outcome"] == "refused"
    )
    assert deliver_coinbase(coinbase_event("charge:failed", charge)).json()["outcome"] == "applied"
    assert Order.objects.get(public_id=order_id).status == "failed"
    assert not purchase_lots(tenant).exists()


# Providers that are down -------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["stripe", "coinbase"])
@pytest.mark.parametrize("outage", ["closed", "500", "slow", "proxy page"])
def test_a_provider_that_is_down_answers_503_and_leaves_no_order(
    tenant, api, stripe_server, coinbase_server, settings, provider, outage, monkeypatch
):
    server = stripe_server if provider == "stripe" else coinbase_server
    settings.PAYMENT_PROVIDER_TIMEOUT_SECONDS = 0.5
    if outage == "closed":
        server.close()
    elif outage == "500":
        server.fail_with = 500
    elif outage == "slow":
        server.hang = 1.5
    else:  # a proxy in front of the provider answers 200 with its own HTML page
        monkeypatch.setattr(server, "handle", lambda *args: (200, "<html>Bad gateway</html>"))
    before = written(tenant)

    started = time.monotonic()
    response = buy(api, "10", provider)

    assert response.status_code == 503, response.content
    error = response.json()["error"]
    assert error["code"] == 503 and error["metadata"]["type"] == "provider_unavailable"
    assert written(tenant) == before
    assert time.monotonic() - started < 10  # timeouts and a bounded number of retries
    if outage == "500":
        # Stripe's library retries a 5xx once (PAYMENT_PROVIDER_RETRIES = 1; the session is
        # idempotent by its key); a Coinbase charge is retried only when it was never sent.
        assert len(server.requests) == (2 if provider == "stripe" else 1)


def test_an_unconfigured_provider_is_503(api, settings):
    settings.STRIPE_SECRET_KEY = ""
    settings.COINBASE_COMMERCE_API_KEY = ""
    for provider in ("stripe", "coinbase"):
        response = buy(api, "10", provider)
        assert response.status_code == 503
        assert "not configured" in response.json()["error"]["message"]
    assert not Order.objects.exists()


# Bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field",
    [
        ({"amount": "4.99", "provider": "manual"}, "amount"),
        ({"amount": "10000.01", "provider": "manual"}, "amount"),
        ({"amount": "10.001", "provider": "manual"}, "amount"),
        ({"amount": "-5", "provider": "manual"}, "amount"),
        ({"amount": "ten", "provider": "manual"}, "amount"),
        ({"amount": 10.5, "provider": "manual"}, "amount"),
        ({"amount": "10", "provider": "paypal"}, "provider"),
        ({"amount": "10"}, "provider"),
        ({"amount": "10", "provider": "manual", "price": "1"}, "price"),
    ],
)
def test_bad_purchases_are_400_and_write_nothing(tenant, api, body, field):
    before = written(tenant)
    response = api.post("/api/v1/credits/purchase", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["metadata"]["type"] == "validation_error"
    assert field in error["metadata"]["errors"], error
    assert written(tenant) == before


def test_another_organizations_order_is_404(tenant, other_tenant, api):
    theirs, _ = order_create(
        organization=other_tenant.org, amount="10", provider="manual", actor=SYSTEM
    )
    for path in (
        f"/api/v1/billing/orders/{theirs.public_id}",
        "/api/v1/billing/orders/6d0f3f3e-0000-4000-8000-000000000000",
    ):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["metadata"]["type"] == "not_found"
    assert api.get("/api/v1/billing/orders").json()["results"] == []


def test_manual_purchase_answers_the_order_page(tenant, api):
    body = buy(api, "100", "manual").json()
    assert body["status"] == "pending" and body["provider"] == "manual"
    assert body["checkout_url"].endswith(f"/o/{tenant.org.slug}/billing/orders/{body['id']}/")


# Bad webhooks ------------------------------------------------------------------------------------


def _stripe_raw(body: bytes, signature: str | None):
    extra = {"HTTP_STRIPE_SIGNATURE": signature} if signature is not None else {}
    return Client().post(STRIPE_HOOK, body, content_type="application/json", **extra)


def test_bad_stripe_webhooks_are_400_and_store_nothing(tenant, api, stripe_server, caplog):
    order_id = buy(api, "10").json()["id"]
    event = stripe_event(
        "checkout.session.completed", session_completed(stripe_server.last_session())
    )
    body, good = stripe_signed(event)
    _, wrong = stripe_signed(event, secret="whsec_someone_else")
    _, old = stripe_signed(event, at=int(time.time()) - 301)
    cases = [
        (body, None),
        (body, ""),
        (body, wrong),
        (body, old),
        (body, "t=abc,v1=zz"),
        (body, "garbage"),
        (body.replace(b"paid", b"PAID"), good),  # changed after signing
    ]
    for raw in (
        b"not json",
        b"[1, 2]",
        b'{"id": "evt_1"}',
        b'{"id": 5, "type": "x", "data": {}}',
        b'{"id": "evt_1", "type": "checkout.session.completed", "data": []}',
        b"\xff\xfe",
    ):
        t = int(time.time())
        cases.append((raw, f"t={t},v1={_hmac(f'{t}.'.encode() + raw, b'whsec_test_portal')}"))
    before = written(tenant)
    for raw, signature in cases:
        response = _stripe_raw(raw, signature)
        assert response.status_code == 400, (raw, signature, response.content)
        assert response.json()["error"]["metadata"]["type"] == "invalid_webhook"
    assert written(tenant) == before
    assert Order.objects.get(public_id=order_id).status == "pending"
    refusals = [r for r in caplog.records if r.name == "billing.webhooks"]
    assert len(refusals) == len(cases) and "Invalid Stripe signature" in refusals[2].getMessage()


def test_bad_coinbase_webhooks_are_400_and_store_nothing(tenant, api, coinbase_server):
    buy(api, "10", "coinbase")
    good = coinbase_event("charge:confirmed", charge_paid(coinbase_server.last_charge()))
    raw, signature = coinbase_signed(good)
    cases = [
        (raw, None),
        (raw, "0" * 64),
        (raw, coinbase_signed(good, secret="another")[1]),
        (raw + b" ", signature),
    ]
    for bad in (
        b"not json",
        b"[]",
        b"{}",
        json.dumps({"event": {"id": "e1"}}).encode(),
        json.dumps({"event": {"id": "e1", "type": "charge:confirmed", "data": "x"}}).encode(),
    ):
        cases.append((bad, _hmac(bad, b"cc-webhook-secret")))
    before = written(tenant)
    for body, sig in cases:
        extra = {"HTTP_X_CC_WEBHOOK_SIGNATURE": sig} if sig is not None else {}
        response = Client().post(COINBASE_HOOK, body, content_type="application/json", **extra)
        assert response.status_code == 400, (body, sig, response.content)
    assert written(tenant) == before


def _hmac(raw: bytes, secret: bytes) -> str:
    return hmac.new(secret, raw, hashlib.sha256).hexdigest()


def test_unconfigured_webhooks_are_503(settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    response = _stripe_raw(b"{}", "t=1,v1=00")
    assert response.status_code == 503
    assert not ProviderEvent.objects.exists()


# Expiry ------------------------------------------------------------------------------------------


def test_pending_orders_expire_after_their_age(tenant, api, stripe_server, coinbase_server):
    from datetime import timedelta

    from django.utils import timezone

    card = buy(api, "10").json()["id"]
    crypto = buy(api, "11", "coinbase").json()["id"]
    bank = buy(api, "12", "manual").json()["id"]
    fresh = buy(api, "13").json()["id"]
    under_way = buy(api, "14", "coinbase").json()["id"]
    deliver_coinbase(coinbase_event("charge:pending", coinbase_server.last_charge()))
    day_ago = timezone.now() - timedelta(hours=25)
    Order.objects.filter(public_id__in=[card, crypto, bank, under_way]).update(created_at=day_ago)

    assert orders_expire() == 2

    status = dict(Order.objects.values_list("public_id", "status"))
    assert [
        status[Order.objects.get(public_id=i).public_id]
        for i in (card, crypto, bank, fresh, under_way)
    ] == ["expired", "expired", "pending", "pending", "pending"]
    Order.objects.filter(public_id=bank).update(created_at=timezone.now() - timedelta(days=31))
    assert expire_task.delay().get() == 1  # the beat task (eager in tests)
    assert AuditEvent.objects.filter(organization=tenant.org, action="order.expired").count() == 3
