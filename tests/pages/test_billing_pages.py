"""The purchase pages in real Chromium against the live server and a loopback Stripe: an owner
buys a pack by card and lands on Stripe's hosted page; back on the order's page the status turns
to paid by itself (htmx) when Stripe's signed webhook arrives; a bank transfer shows its
instructions and is confirmed on a confirmation page. axe finds no serious violation.

Screenshots at 1280 and 390 px wide go to SCREENSHOTS (billing-<page>-<width>.png)."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from playwright.sync_api import expect

from billing.models import Order

from ..billing.conftest import (
    session_completed,
    stripe_event,
    stripe_server,  # noqa: F401  (the loopback Stripe fixture)
    stripe_signed,
)
from .test_accessibility import violations
from .test_pages import log_in

pytestmark = pytest.mark.django_db(transaction=True)


def shots(page, screenshot, name: str) -> None:
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        screenshot(f"billing-{name}-{width}")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_buy_by_card_then_the_order_turns_paid_by_itself(
    page,
    tenant,
    stripe_server,  # noqa: F811
    screenshot,
):
    log_in(page, tenant.owner.email)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Billing").click()
    expect(page.get_by_role("heading", name="Orders", level=1)).to_be_visible()
    expect(page.get_by_text("No orders yet.")).to_be_visible()
    page.get_by_role("link", name="Buy credits").first.click()
    expect(page.get_by_role("heading", name="Buy credits", level=1)).to_be_visible()
    shots(page, screenshot, "buy")

    page.get_by_label("50 credits").check()
    page.get_by_label("Card (Stripe)").check()
    page.get_by_role("button", name="Continue to payment").click()

    expect(page.get_by_role("heading", name="Pay $50.00")).to_be_visible()
    assert page.url.startswith(stripe_server.base + "/c/pay/cs_test_")
    order = Order.objects.get()

    page.goto(f"/o/acme/billing/orders/{order.public_id}/?checkout=success")
    status = page.get_by_test_id("order-status")
    expect(status).to_contain_text("Waiting for the payment provider's confirmation")
    shots(page, screenshot, "order-pending")

    body, signature = stripe_signed(
        stripe_event("checkout.session.completed", session_completed(stripe_server.last_session()))
    )
    delivered = Client().post(
        "/api/v1/billing/webhooks/stripe",
        body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature,
    )
    assert delivered.json()["outcome"] == "applied"

    expect(status.locator("[data-status]")).to_have_text("Paid", timeout=10_000)  # no reload
    expect(status).to_contain_text("50.00 credits were added to the pool")
    shots(page, screenshot, "order-paid")
    expect(page.get_by_test_id("balance-widget")).to_contain_text("50")


def test_bank_transfer_instructions_and_confirmation(page, tenant, screenshot):
    log_in(page, tenant.owner.email)
    page.goto("/o/acme/billing/buy/")
    page.get_by_label("Another amount").check()
    page.get_by_label("Custom amount (USD)").fill("4.99")
    page.get_by_label("Bank transfer (manual)").check()
    page.get_by_role("button", name="Continue to payment").click()
    expect(page.get_by_text("Between 5.00 and 10000.00 USD.")).to_be_visible()
    shots(page, screenshot, "buy-error")
    assert not Order.objects.exists()

    page.get_by_label("Custom amount (USD)").fill("1250")
    page.get_by_role("button", name="Continue to payment").click()
    expect(page).to_have_url(re.compile(r"/o/acme/billing/orders/[0-9a-f-]{36}/$"))
    expect(page.get_by_test_id("order-status")).to_contain_text("Pay the total by bank transfer")
    shots(page, screenshot, "order-manual")

    page.get_by_role("link", name="Confirm the transfer arrived").click()
    expect(page.get_by_role("heading", name="Confirm the bank transfer")).to_be_visible()
    page.get_by_role("button", name="Yes, the money has arrived").click()
    expect(page.get_by_role("status").first).to_contain_text("Payment confirmed")
    expect(page.get_by_test_id("order-status").locator("[data-status]")).to_have_text("Paid")
    assert Order.objects.get().status == "paid"

    page.goto("/o/acme/billing/orders/")
    expect(page.get_by_test_id("orders-table")).to_contain_text("1,250.00")
    shots(page, screenshot, "orders")

    found = []
    order = Order.objects.get()
    for path in (
        "/o/acme/billing/buy/",
        "/o/acme/billing/orders/",
        f"/o/acme/billing/orders/{order.public_id}/",
    ):
        found += violations(page, path)
    assert found == [], "\n".join(found)
