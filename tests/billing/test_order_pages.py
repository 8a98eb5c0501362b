"""The purchase pages through Django's test client: buying redirects to the provider's checkout
(or, by bank transfer, to the order's page), a refused purchase shows its error on the form and
writes nothing, the order's status fragment is what htmx polls, and a billing member confirms a
bank transfer on a confirmation page. Who may open what is in tests/test_access_matrix.py."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from django.test import Client

from accounts.roles import Role
from billing.models import Invoice, Order
from credits.models import CreditLot

from .conftest import session_completed, stripe_event, stripe_signed

pytestmark = pytest.mark.django_db


@pytest.fixture
def billing_member(tenant):
    user = tenant.member(Role.BILLING, email="billing@acme.test")
    client = Client()
    client.force_login(user)
    return client


def url(tenant, tail: str) -> str:
    return f"/o/{tenant.org.slug}/billing/{tail}"


def test_buying_a_pack_by_card_goes_to_stripe_checkout(tenant, billing_member, stripe_server):
    page = billing_member.get(url(tenant, "buy/"))
    assert page.status_code == 200
    content = page.content.decode()
    for pack in ("10 credits", "50 credits", "100 credits", "500 credits", "Another amount"):
        assert pack in content
    assert "<h1>Buy credits</h1>" in content

    response = billing_member.post(url(tenant, "buy/"), {"pack": "50", "provider": "stripe"})

    order = Order.objects.get()
    assert response.status_code == 302 and response.url == order.checkout_url
    assert response.url == stripe_server.last_session()["url"]
    assert (order.amount, order.provider, order.created_by.email) == (
        Decimal("50.00"),
        "stripe",
        "billing@acme.test",
    )
    # Stripe's hosted page is where the buyer lands (the loopback serves one).
    assert Client().get(response.url).status_code == 404  # not the portal's
    assert b"Pay $50.00" in httpx.get(response.url).content


@pytest.mark.parametrize(
    "form, message",
    [
        ({"pack": "custom", "custom_amount": "4.99", "provider": "stripe"}, "Between 5.00"),
        ({"pack": "custom", "custom_amount": "", "provider": "stripe"}, "Enter an amount"),
        ({"pack": "custom", "custom_amount": "1.005", "provider": "stripe"}, "whole cents"),
        ({"pack": "77", "provider": "stripe"}, "Select a valid choice"),
        ({"pack": "10", "provider": "paypal"}, "Select a valid choice"),
    ],
)
def test_a_bad_purchase_form_shows_its_error_and_writes_nothing(
    tenant, billing_member, stripe_server, form, message
):
    response = billing_member.post(url(tenant, "buy/"), form)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Order.objects.exists() and not stripe_server.sessions


def test_a_provider_that_is_down_is_said_on_the_form(tenant, billing_member, stripe_server):
    stripe_server.close()
    response = billing_member.post(url(tenant, "buy/"), {"pack": "10", "provider": "stripe"})
    assert response.status_code == 200
    assert "Stripe is unreachable" in response.content.decode()
    assert not Order.objects.exists()


def test_bank_transfer_order_page_and_confirmation(tenant, billing_member):
    response = billing_member.post(
        url(tenant, "buy/"), {"pack": "custom", "custom_amount": "12.50", "provider": "manual"}
    )
    order = Order.objects.get()
    page = url(tenant, f"orders/{order.public_id}/")
    assert response.status_code == 302 and response.url == page
    shown = billing_member.get(page).content.decode()
    assert "Pay the total by bank transfer" in shown and str(order.public_id) in shown
    assert 'data-status="pending"' in shown and 'hx-trigger="every 3s"' in shown
    assert "Confirm the transfer arrived" in shown

    confirm = url(tenant, f"orders/{order.public_id}/confirm/")
    question = billing_member.get(confirm).content.decode()
    assert "Has the transfer of 12.50 USD" in question
    done = billing_member.post(confirm, follow=True)
    assert "Payment confirmed: the credits are granted." in done.content.decode()
    order.refresh_from_db()
    assert order.status == "paid"
    assert Invoice.objects.get(order=order).status == "paid"
    assert [lot.original_amount for lot in CreditLot.objects.filter(source="purchase")] == [
        Decimal("12.50")
    ]
    again = billing_member.post(confirm, follow=True)
    assert "This order was paid already." in again.content.decode()
    assert CreditLot.objects.filter(source="purchase").count() == 1


def test_only_bank_transfers_are_confirmed_by_hand(tenant, billing_member, stripe_server):
    billing_member.post(url(tenant, "buy/"), {"pack": "10", "provider": "stripe"})
    order = Order.objects.get()
    done = billing_member.post(url(tenant, f"orders/{order.public_id}/confirm/"), follow=True)
    assert "Only a bank-transfer order is confirmed by hand." in done.content.decode()
    assert Order.objects.get().status == "pending"


def test_the_status_fragment_is_polled_while_pending_and_stops_once_paid(
    tenant, billing_member, stripe_server
):
    billing_member.post(url(tenant, "buy/"), {"pack": "10", "provider": "stripe"})
    order = Order.objects.get()
    page = url(tenant, f"orders/{order.public_id}/")
    fragment = billing_member.get(page, HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<section class="card" id="order-status"')
    assert "<html" not in fragment and 'hx-trigger="every 3s"' in fragment

    body, signature = stripe_signed(
        stripe_event("checkout.session.completed", session_completed(stripe_server.last_session()))
    )
    Client().post(
        "/api/v1/billing/webhooks/stripe",
        body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature,
    )
    fragment = billing_member.get(page, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-status="paid"' in fragment and "hx-trigger" not in fragment
    assert Invoice.objects.get(order=order).number in fragment


def test_orders_list_and_navigation(tenant, billing_member):
    admin = tenant.member(Role.ADMIN, email="admin@acme.test")
    member = tenant.member(Role.MEMBER, email="member@acme.test")
    billing_member.post(url(tenant, "buy/"), {"pack": "10", "provider": "manual"})
    listed = billing_member.get(url(tenant, "orders/")).content.decode()
    assert 'data-testid="orders-table"' in listed and "Buy credits" in listed
    assert f'href="/o/{tenant.org.slug}/billing/orders/"' in listed  # the navigation

    as_admin = Client()
    as_admin.force_login(admin)
    shown = as_admin.get(url(tenant, "orders/")).content.decode()
    assert 'data-testid="orders-table"' in shown and "Buy credits" not in shown
    as_member = Client()
    as_member.force_login(member)
    home = as_member.get(f"/o/{tenant.org.slug}/").content.decode()
    assert "/billing/orders/" not in home
    assert as_member.get(url(tenant, "orders/")).status_code == 404
