"""The automatic top-up page in real Chromium against the live server and a loopback Stripe: a
billing member saves a card (the browser goes to Stripe's setup Checkout and comes back with the
session id), sets the rule, and approves the top-up it starts; axe finds nothing serious.

Screenshots at 1280 and 390 px go to SCREENSHOTS (billing-topup-<state>-<width>.png)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from accounts.roles import Role
from billing.models import TopUp, TopUpRule
from billing.services.topup import topup_sweep
from credits.models import LedgerAccount

from ..billing.stripe_topup_server import StripeServer
from .conftest import SCREENSHOTS
from .test_accessibility import SERIOUS, axe_inject
from .test_pages import PASSWORD, log_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stripe_server(settings, live_server):
    with StripeServer() as server:
        settings.STRIPE_SECRET_KEY = "sk_test_loopback"
        settings.STRIPE_API_BASE = server.base
        settings.PAYMENT_PROVIDER_RETRIES = 0
        settings.PORTAL_BASE_URL = live_server.url
        yield server


def shoot(page, name: str) -> None:
    """Full-page screenshots at 1280 and 390 px; the page must not scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(150)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        page.screenshot(path=str(SCREENSHOTS / f"billing-topup-{name}-{width}.png"), full_page=True)
        assert overflow <= 1, f"{name} scrolls sideways at {width} px by {overflow} px"
    page.set_viewport_size({"width": 1280, "height": 900})


def axe(page) -> list[str]:
    axe_inject(page)
    result = page.evaluate("axe.run()")
    return [v["id"] for v in result["violations"] if v["impact"] in SERIOUS]


def test_a_billing_member_saves_a_card_sets_the_rule_and_approves(page, tenant, stripe_server):
    tenant.grant("30")
    billing = tenant.member(Role.BILLING, email="billing@acme.test")
    log_in(page, billing.email, PASSWORD)
    page.goto("/o/acme/")
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Billing").click()
    page.get_by_role("navigation", name="Billing").get_by_role("link", name="Top-up").click()
    expect(page.get_by_role("heading", name="Automatic top-up", exact=True)).to_be_visible()
    shoot(page, "empty")

    # Stripe's hosted page, played by the test: the card is saved, Stripe sends the member back.
    def checkout(route):
        session_id = route.request.url.rsplit("/", 1)[1]
        stripe_server.state.complete(session_id)
        back = stripe_server.state.sessions[session_id]["success_url"].replace(
            "{CHECKOUT_SESSION_ID}", session_id
        )
        route.fulfill(status=303, headers={"Location": back})

    page.route("https://checkout.stripe.test/**", checkout)
    page.get_by_role("button", name="Save a card").click()
    expect(page.get_by_text("Card saved for automatic top-ups.")).to_be_visible()

    page.get_by_label("Top up automatically").check()
    page.get_by_label("When the available balance falls below (credits)").fill("50")
    page.get_by_label("A fixed amount").check()
    page.get_by_label("Fixed amount (USD = credits)").fill("25")
    page.get_by_label("Monthly cap (USD charged per calendar month, tax included)").fill("100")
    page.get_by_label("A billing member approves each top-up first").check()
    page.get_by_role("button", name="Save the rule").click()
    expect(page.get_by_text("Automatic top-up saved.")).to_be_visible()
    assert TopUpRule.objects.get().amount == Decimal("25")

    topup_sweep()  # the pool (30) is below the threshold: a top-up awaits approval
    page.reload()
    expect(page.get_by_test_id("topup-attempts")).to_contain_text("Awaiting approval")
    assert axe(page) == []
    shoot(page, "awaiting")
    page.get_by_role("button", name=re.compile("^Approve")).click()
    expect(page.get_by_text(re.compile("approved: the card is being charged"))).to_be_visible()
    expect(page.get_by_test_id("topup-attempts")).to_contain_text("Succeeded")
    assert TopUp.objects.get().state == TopUp.State.SUCCEEDED
    assert len(stripe_server.charges) == 1
    assert LedgerAccount.objects.get(organization=tenant.org, kind="pool").balance == 55
    shoot(page, "charged")


def test_the_form_shows_its_errors(page, tenant):
    log_in(page, tenant.owner.email)
    page.goto("/o/acme/billing/topup/")
    page.get_by_label("When the available balance falls below (credits)").fill("50")
    page.get_by_label("Up to a target balance").check()
    page.get_by_label("Target balance (credits): the whole shortfall in one charge").fill("40")
    page.get_by_label("Monthly cap (USD charged per calendar month, tax included)").fill("100")
    page.get_by_role("button", name="Save the rule").click()
    expect(page.get_by_text("Must be above the threshold.")).to_be_visible()
    assert axe(page) == []
    shoot(page, "errors")
    assert not TopUpRule.objects.exists()
