"""The notifications pages in real Chromium against the live server: the bell's unread count in
the header follows budget alerts fired by usage and what the member reads; the notifications
list; the webhooks page and one endpoint's deliveries (a receiver that accepts, one that
fails), with a re-send; the member's preferences (SMS needs a mobile number).

Screenshots of each page at 1280 and 390 px wide go to SCREENSHOTS
(notifications-<page>-<width>.png)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from credits.services import Attribution, UsageInput, usage_record
from credits.services.budgets import budget_create
from notifications.models import NotificationPreference, OutboxMessage
from notifications.services import notify, webhook_endpoint_create
from tests.notifications.conftest import Receiver

from ..conftest import SYSTEM
from .conftest import SCREENSHOTS
from .test_pages import log_in

pytestmark = pytest.mark.django_db(transaction=True)


def shoot(page, name: str) -> None:
    """Full-page screenshots at 1280 and 390 px wide; the page must not scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(150)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        page.screenshot(path=str(SCREENSHOTS / f"notifications-{name}-{width}.png"), full_page=True)
        if overflow > 1:
            wide = page.evaluate(
                """() => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth)
                .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)"""
            )
            raise AssertionError(f"{name} scrolls sideways at {width} px by {overflow} px: {wide}")
    page.set_viewport_size({"width": 1280, "height": 900})


@pytest.fixture
def receivers():
    ok, failing = Receiver(), Receiver()
    failing.statuses = [500] * 20
    yield ok, failing
    ok.server.shutdown()
    failing.server.shutdown()


@pytest.fixture
def alerted(tenant, settings, receivers):
    """Acme with a monthly organization budget of 10 credits taken to 100 % by usage: three
    alerts (75 %, 90 %, exhausted), each told in the portal and to two webhook endpoints, one of
    which fails."""
    settings.PORTAL_BASE_URL = "https://portal.example.test"  # the receivers are on loopback
    ok, failing = receivers
    tenant.grant("100")
    key, _ = tenant.key("usage")
    events = ["budget.threshold_crossed", "budget.exhausted"]
    webhook_endpoint_create(
        organization=tenant.org, url=ok.url, events=events, description="Ops alerts",
        actor=SYSTEM,
    )  # fmt: skip
    webhook_endpoint_create(
        organization=tenant.org, url=failing.url, events=["budget.exhausted"],
        description="Legacy pager", actor=SYSTEM,
    )  # fmt: skip
    budget_create(
        organization=tenant.org, scope="organization", period="monthly", limit="10", actor=SYSTEM
    )
    for id, cost in (("a", "8"), ("b", "2")):  # 75 %, then 90 % and 100 %
        usage_record(
            attribution=Attribution.of_key(key),
            event=UsageInput(id=id, model="openai/gpt-4o", cost=Decimal(cost)),
        )
    tenant.receivers = receivers
    return tenant


def test_the_bell_counts_unread_notifications_and_the_list_marks_them_read(page, alerted):
    log_in(page, alerted.owner.email)
    count = page.get_by_test_id("unread-count")
    expect(count).to_have_text("3")
    expect(count).to_have_class(re.compile(r"\bunread\b"))
    page.get_by_test_id("notification-bell").click()
    expect(page).to_have_url(re.compile(r"/o/acme/notifications/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Notifications")
    rows = page.get_by_test_id("notifications-table").locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("Budget exhausted")
    expect(rows.first).to_contain_text("No room is left in the monthly budget of the organization")
    shoot(page, "list")

    page.get_by_role(
        "button", name=re.compile("^Mark as read the notification “Budget exhausted”")
    ).click()
    expect(page.get_by_role("status")).to_contain_text("Marked as read.")
    expect(count).to_have_text("2")
    page.get_by_role("button", name="Mark all as read").click()
    expect(page.get_by_role("status")).to_contain_text("2 notifications marked as read.")
    expect(count).to_have_text("0")
    expect(count).not_to_have_class(re.compile(r"\bunread\b"))
    expect(page.get_by_test_id("notifications-table").locator("tbody tr.unread")).to_have_count(0)
    # A new one while the page is open: the bell (polled every 10 s) shows it without a reload.
    notify(organization=alerted.org, type="balance.low", data={"available": "3.5"})
    expect(count).to_have_text("1", timeout=15_000)
    expect(count).to_have_class(re.compile(r"\bunread\b"))


def test_webhooks_and_their_deliveries_with_a_resend(page, alerted):
    ok, failing = alerted.receivers
    assert len(ok.accepted()) == 3 and failing.requests and not failing.accepted()
    log_in(page, alerted.owner.email)
    page.goto("/o/acme/webhooks/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Webhooks")
    table = page.get_by_test_id("webhooks-table")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table).to_contain_text("Ops alerts")
    shoot(page, "webhooks")

    table.get_by_role("link", name=f"Deliveries of {failing.url}").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(failing.url)
    deliveries = page.get_by_test_id("deliveries-table").locator("tbody tr")
    expect(deliveries).to_have_count(1)
    expect(deliveries.first).to_contain_text("budget.exhausted")
    expect(deliveries.first).to_contain_text("HTTP 500")
    shoot(page, "deliveries")

    failing.statuses = []  # the receiver is fixed: the re-send goes through
    message = OutboxMessage.objects.get(target=failing.url)
    page.get_by_role("button", name=f"Re-send {message.message_id}").click()
    expect(page.get_by_role("status")).to_contain_text(f"{message.message_id} queued again.")
    expect(deliveries.first).to_contain_text("Delivered")
    assert len(failing.accepted()) == 1

    page.goto("/o/acme/webhooks/")
    page.get_by_role("link", name=f"Deliveries of {ok.url}").click()
    expect(page.get_by_test_id("deliveries-table").locator("tbody tr")).to_have_count(3)
    shoot(page, "deliveries-ok")


def test_preferences_need_a_mobile_number_for_sms(page, alerted):
    log_in(page, alerted.owner.email)
    page.goto("/o/acme/notifications/")
    page.get_by_role("link", name="Choose what you get, and how").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Notification preferences")
    shoot(page, "preferences")
    page.get_by_label("SMS: Budget exhausted").check()
    page.get_by_label("E-mail: Budget threshold crossed").check()
    page.get_by_role("button", name="Save the preferences").click()
    expect(page.get_by_text("Add a mobile number to get SMS.")).to_be_visible()
    assert not NotificationPreference.objects.exists()
    shoot(page, "preferences-error")
    page.get_by_label("Mobile number for SMS").fill("+14155550123")
    page.get_by_role("button", name="Save the preferences").click()
    expect(page.get_by_role("status")).to_contain_text("Notification preferences saved.")
    expect(page.get_by_label("SMS: Budget exhausted")).to_be_checked()
    expect(page.get_by_label("E-mail: Budget threshold crossed")).to_be_checked()
    saved = NotificationPreference.objects.get(user=alerted.owner, event_type="budget.exhausted")
    assert saved.sms and saved.in_app
