"""The upstream sync page in real Chromium against the live server and a loopback OpenRouter
(`tests/billing/openrouter_server.py`): an owner connects a management key from the navigation,
syncs, sees OpenRouter's totals beside the portal's with the drift over time (Chart.js), and a
failed sync's message; a billing member sees the same, an admin reads without the buttons.

Screenshots at 1280 and 390 px wide go to SCREENSHOTS (billing-sync-<state>-<width>.png)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.roles import Role
from billing.models import OpenRouterSnapshot

from ..billing.openrouter_server import MANAGEMENT_KEY, OpenRouter
from .conftest import SCREENSHOTS
from .test_accessibility import violations
from .test_pages import log_in

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def openrouter(settings):
    server = OpenRouter()
    settings.OPENROUTER_API_BASE = server.base
    yield server
    server.stop()


def shoot(page, name: str) -> None:
    """Full-page screenshots at 1280 and 390 px wide; the page must not scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(200)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        page.screenshot(path=str(SCREENSHOTS / f"billing-sync-{name}-{width}.png"), full_page=True)
        assert overflow <= 1, f"{name} scrolls sideways at {width} px by {overflow} px"
    page.set_viewport_size({"width": 1280, "height": 900})


def _backdate(hours: float) -> None:
    """The latest snapshot moved `hours` back (a history of syncs for the chart)."""
    latest = OpenRouterSnapshot.objects.order_by("-id").first()
    OpenRouterSnapshot.objects.filter(pk=latest.pk).update(
        fetched_at=timezone.now() - timedelta(hours=hours)
    )


def test_connect_sync_and_read_the_drift(page, tenant, openrouter):
    tenant.grant("250")
    log_in(page, tenant.owner.email)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Billing").click()
    page.get_by_role("navigation", name="Billing").get_by_role("link", name="Upstream sync").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Upstream sync")
    expect(page.get_by_role("heading", name="Not connected")).to_be_visible()
    page.get_by_test_id("connect").click()

    # A bad threshold is shown on its field; nothing is stored.
    page.get_by_label("OpenRouter management key").fill(MANAGEMENT_KEY)
    page.get_by_label("Alert when the drift is larger than (credits)").fill("-3")
    page.get_by_role("button", name="Connect").click()
    expect(page.locator(".field.has-error")).to_contain_text("greater than or equal to 0")
    expect(page.get_by_label("OpenRouter management key")).to_have_value("")  # never echoed
    shoot(page, "connection")
    page.get_by_label("OpenRouter management key").fill(MANAGEMENT_KEY)
    page.get_by_label("Alert when the drift is larger than (credits)").fill("20")
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("status")).to_contain_text("Connected to OpenRouter")
    expect(page.get_by_test_id("connection")).to_contain_text("sk-or-v1-…cdef")

    # A week of syncs: OpenRouter's usage runs ahead of the portal's, then a jump.
    for hours, usage in ((168, "1.5"), (120, "4.25"), (72, "9"), (24, "14.5"), (2, "31")):
        openrouter.total_credits, openrouter.total_usage = "250", usage
        page.get_by_test_id("sync-now").click()
        expect(page.get_by_role("status")).to_contain_text("Synced with OpenRouter")
        _backdate(hours)
    openrouter.total_usage = "38.75"
    page.get_by_test_id("sync-now").click()
    expect(page.get_by_role("status")).to_contain_text("drift -38.7500 credits")
    expect(page.get_by_test_id("upstream-remaining")).to_have_text("211.25")
    expect(page.get_by_test_id("portal-remaining")).to_have_text("250.00")
    expect(page.get_by_test_id("drift")).to_have_text("-38.75")
    assert page.evaluate("() => Chart.getChart('sync-left-chart').data.datasets.length") == 2
    assert page.evaluate("() => Chart.getChart('sync-drift-chart').data.datasets.length") == 3
    # On a time axis: the syncs are spaced as they happened (7 days, then 2 hours, apart).
    xs = page.evaluate(
        "() => Chart.getChart('sync-drift-chart').data.datasets[0].data.map(p => p.x)"
    )
    assert (xs[1] - xs[0]) / (xs[-1] - xs[-2]) == pytest.approx(48 / 2, rel=0.01)
    expect(page.get_by_test_id("snapshots-table").locator("tbody tr")).to_have_count(6)
    expect(page.get_by_test_id("snapshots-table")).to_contain_text("Alerted")
    shoot(page, "ok")

    # OpenRouter fails: the page says so, and keeps the last good figures.
    openrouter.fail_with = 500
    page.get_by_test_id("sync-now").click()
    expect(page.locator(".messages .error")).to_contain_text(
        "The sync failed: OpenRouter failed (HTTP 500: Internal Server Error)"
    )
    expect(page.get_by_test_id("sync-error")).to_contain_text("The last sync failed")
    expect(page.get_by_test_id("drift")).to_have_text("-38.75")
    shoot(page, "error")
    # With charts, a failed sync and a full table: no serious accessibility violation (axe).
    assert violations(page, f"/o/{tenant.org.slug}/billing/openrouter/") == []


def test_an_admin_reads_without_the_buttons(page, tenant, openrouter):
    admin = tenant.member(Role.ADMIN, email="admin@acme.test")
    admin.set_password("correct-horse-battery")
    admin.save()
    log_in(page, admin.email)
    page.goto(f"/o/{tenant.org.slug}/billing/openrouter/")
    expect(page.get_by_role("heading", name="Not connected")).to_be_visible()
    expect(page.get_by_text("A billing member or an owner can connect it.")).to_be_visible()
    expect(page.get_by_test_id("connect")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"/billing/openrouter/$"))
