"""The credits pages in real Chromium against the live server: the header balance follows usage
posted through the API without a reload, the usage explorer filters (htmx) and exports CSV, an
admin allocates to a team, a member's own page.

Screenshots of each page at 1280 and 390 px wide go to SCREENSHOTS (credits-<page>-<width>.png)."""

from __future__ import annotations

import csv
import re
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import TeamMembership
from accounts.roles import Role
from accounts.services import apikey_create, team_create
from credits.models import LedgerAccount
from credits.services import Attribution, UsageInput, usage_record

from ..conftest import SYSTEM
from .conftest import SCREENSHOTS
from .test_pages import log_in

pytestmark = pytest.mark.django_db(transaction=True)


def spend(key, event_id, cost, *, hours_ago=0.0, **fields):
    usage_record(
        attribution=Attribution.of_key(key),
        event=UsageInput(
            id=event_id,
            model=fields.pop("model", "openai/gpt-4o"),
            cost=Decimal(cost),
            prompt_tokens=1200,
            completion_tokens=300,
            occurred_at=timezone.now() - timedelta(hours=hours_ago),
            **fields,
        ),
    )


@pytest.fixture
def acme(tenant):
    """Acme with 500 credits (200 with Research), a pool-funded Platform team, a member on
    Research with their own key, a colleague, and a month of usage."""
    tenant.grant("500")
    tenant.grant("40", expires_at=timezone.now() + timedelta(days=12))
    tenant.allocate("200")
    platform = team_create(
        organization=tenant.org, slug="platform", name="Platform", funding="pool", actor=SYSTEM
    )
    member = tenant.member(Role.MEMBER, email="member@acme.test")
    colleague = tenant.member(Role.MEMBER, email="colleague@acme.test")
    for user in (member, colleague):
        TeamMembership.objects.create(team=tenant.team, user=user)
    keys = {}
    for name, team, user in (
        ("member-key", tenant.team, member),
        ("colleague-key", tenant.team, colleague),
        ("platform-key", platform, None),
    ):
        keys[name], secret = apikey_create(
            organization=tenant.org, name=name, kind="usage", team=team, user=user, actor=SYSTEM
        )
        keys[name].secret = secret
    models = ("openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-sonnet-4")
    for i in range(40):  # a month of traffic, busier in the afternoon
        key = keys[("member-key", "colleague-key", "platform-key")[i % 3]]
        spend(
            key,
            f"e{i}",
            f"{0.4 + (i % 7) * 0.35:.2f}",
            hours_ago=i * 17 + (i % 4),
            model=models[i % 3],
            operation="embedding" if i % 5 == 0 else "chat",
            conversation_id=f"conv-{i % 6}",
        )
    tenant.keys, tenant.member_user = keys, member
    return tenant


def shoot(page, name: str) -> None:
    """Full-page screenshots at 1280 and 390 px wide; the page must not scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(150)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        page.screenshot(path=str(SCREENSHOTS / f"credits-{name}-{width}.png"), full_page=True)
        if overflow > 1:
            wide = page.evaluate(
                """() => [...document.querySelectorAll('main *')]
                .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth)
                .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)"""
            )
            raise AssertionError(f"{name} scrolls sideways at {width} px by {overflow} px: {wide}")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_header_balance_follows_usage_posted_through_the_api(page, acme, live_server):
    log_in(page, acme.owner.email)
    expect(page).to_have_url(re.compile(r"/o/acme/$"))
    balance = page.get_by_test_id("header-balance")
    expect(balance).to_be_visible()
    before = Decimal(balance.inner_text().replace(",", ""))
    response = httpx.post(
        f"{live_server.url}/api/v1/credits/usage",
        headers={"Authorization": f"Bearer {acme.keys['platform-key'].secret}"},
        json={"id": "live-1", "model": "openai/gpt-4o", "prompt_tokens": 10, "cost": "12.5"},
    )
    assert response.status_code == 201, response.text
    expect(balance).to_have_text(f"{before - Decimal('12.5'):,.2f}", timeout=5_000)
    # The dashboard's charts are drawn; then the pictures.
    assert page.evaluate("() => Chart.getChart('split-chart').data.datasets.length") >= 2
    page.get_by_role("button", name="Model").click()
    expect(page.get_by_role("button", name="Model")).to_have_attribute("aria-pressed", "true")
    labels = page.evaluate("() => Chart.getChart('split-chart').data.datasets.map(d => d.label)")
    assert "openai/gpt-4o" in labels
    expect(page.get_by_test_id("projection")).to_contain_text("The projection uses")
    # The top conversations arrive after the page (htmx, under the Content-Security-Policy).
    expect(page.get_by_test_id("conversations-table")).to_be_visible()
    expect(page.get_by_test_id("conversations-loading")).to_have_count(0)
    shoot(page, "dashboard")


def test_usage_explorer_filters_and_exports_csv(page, acme, tmp_path):
    log_in(page, acme.owner.email)
    page.goto("/o/acme/usage/")
    rows = page.get_by_test_id("usage-table").locator("tbody tr")
    expect(rows).to_have_count(40)
    shoot(page, "usage")

    page.get_by_label("Operation").select_option("embedding")  # htmx swaps the table
    expect(rows).to_have_count(8)
    expect(page).to_have_url(re.compile(r"operation=embedding"))
    page.get_by_label("Team").select_option("research")
    expect(rows).to_have_count(5)
    expect(rows.first).to_contain_text("Embedding")

    with page.expect_download() as info:
        page.get_by_test_id("export-csv").click()
    path = tmp_path / "usage.csv"
    info.value.save_as(path)
    with path.open() as f:
        exported = list(csv.DictReader(f))
    assert len(exported) == 5
    assert {r["operation"] for r in exported} == {"embedding"}
    assert {r["team"] for r in exported} == {"research"}
    assert {r["member"] for r in exported} <= {"member@acme.test", "colleague@acme.test"}

    # A filter that cannot be read is an error linked to its field, not a failure.
    page.goto("/o/acme/usage/?start=yesterday")
    errors = page.get_by_test_id("filter-errors")
    expect(errors).to_contain_text("From")
    errors.get_by_role("link", name="From").click()
    expect(page.get_by_label("From")).to_be_focused()


def test_admin_allocates_to_a_team(page, acme):
    admin = acme.member(Role.ADMIN, email="admin@acme.test")
    log_in(page, admin.email)
    page.goto("/o/acme/ledger/")
    form = page.get_by_test_id("allocate-research")
    form.get_by_label("Credits").fill("25")
    form.get_by_label("Direction").select_option("allocate")
    form.get_by_label("Memo").fill("Quarterly top-up")
    form.get_by_role("button", name="Move").click()
    expect(page.get_by_role("status")).to_contain_text("Allocated 25.00 credits to Research.")
    team = LedgerAccount.objects.get(team=acme.team)
    expect(page.locator("tr[data-team=research] [data-testid=team-available]")).to_have_text(
        f"{team.available:,.4f}"
    )
    shoot(page, "ledger")
    page.get_by_role("link", name="Research").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Research account")
    expect(page.get_by_test_id("history-table")).to_contain_text("Quarterly top-up")
    expect(page.get_by_test_id("running-balance").first).to_have_text(f"{team.balance:,.6f}")
    shoot(page, "ledger-account")


def test_member_self_service(page, acme):
    log_in(page, acme.member_user.email)
    page.goto("/o/acme/me/")
    expect(page.get_by_role("heading", level=1)).to_have_text("My usage")
    recent = page.get_by_test_id("me-recent").locator("tbody tr")
    expect(recent).to_have_count(14)  # every third of the 40 events is theirs
    expect(page.get_by_test_id("me-keys")).to_contain_text("member-key")
    expect(page.get_by_test_id("me-teams")).to_contain_text("Research")
    body = page.locator("body")
    expect(body).not_to_contain_text("colleague@acme.test")
    expect(body).not_to_contain_text("colleague-key")
    shoot(page, "me")
    # Their usage page shows their rows only, and the dashboard no colleague either.
    page.goto("/o/acme/usage/")
    expect(page.get_by_test_id("usage-table").locator("tbody tr")).to_have_count(14)
    page.goto("/o/acme/")
    expect(page.locator("body")).not_to_contain_text("colleague@acme.test")
    shoot(page, "dashboard-member")


def test_the_budgets_page_shows_windows_and_alerts(page, acme, live_server):
    """The budgets page as the owner: progress of each budget, an alert acknowledged."""
    from credits.models import Alert
    from credits.services.budgets import budget_create

    made = {}
    for scope, limit, target in (
        ("organization", "400", {}),
        ("team", "60", {"team": acme.team}),
        ("member", "20", {"member": acme.member_user}),
        ("api_key", "5", {"api_key": acme.keys["platform-key"]}),
    ):
        made[scope] = budget_create(
            organization=acme.org, scope=scope, period="monthly", limit=limit, actor=SYSTEM,
            **target,
        )  # fmt: skip
    for budget in (made["team"], made["member"]):
        Alert.objects.create(
            organization=acme.org, budget=budget, window_start=timezone.now(), threshold=90,
            type=Alert.Type.THRESHOLD_CROSSED, spent=budget.limit * Decimal("0.92"),
            limit=budget.limit,
        )  # fmt: skip
    log_in(page, acme.owner.email)
    page.goto("/o/acme/budgets/")
    expect(page.get_by_role("heading", name="Budgets", exact=True)).to_be_visible()
    expect(page.locator("progress")).to_have_count(4)
    expect(page.get_by_role("navigation").get_by_role("link", name="Budgets")).to_be_visible()
    shoot(page, "budgets")
    page.get_by_role("button", name=re.compile("^Acknowledge")).first.click()
    expect(page.get_by_text("Alert acknowledged.")).to_be_visible()
