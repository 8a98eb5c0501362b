"""The pages in real Chromium against the live server: log in and out, password reset by e-mail,
the dashboard (balances, daily spend chart, teams, usage), the organization switcher, tenancy
(404 for non-members), and accepting invitations as a new and as an existing user.

Screenshots of the login page and the dashboard go to test-output/screenshots
(PAGES_SCREENSHOT_DIR)."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import Membership, TeamMembership, User
from accounts.roles import Role, TeamRole
from accounts.services import invitation_create, team_create
from credits.services import Attribution, UsageInput, usage_record

from ..conftest import SYSTEM, make_tenant

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct-horse-battery"  # the owners' password (tests/conftest.py)


def log_in(page, email: str, password: str = PASSWORD, path: str = "/login/") -> None:
    page.goto(path)
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def spend(key, event_id: str, cost: str, model: str, days_ago: float = 0, **tokens) -> None:
    """Record a usage event with an upstream-reported cost, `days_ago` in the past."""
    usage_record(
        attribution=Attribution.of_key(key),
        event=UsageInput(
            id=event_id,
            model=model,
            cost=Decimal(cost),
            prompt_tokens=tokens.get("prompt", 1000),
            completion_tokens=tokens.get("completion", 100),
            occurred_at=timezone.now() - timedelta(days=days_ago),
        ),
    )


def test_log_in_and_out(page, tenant, screenshot):
    page.goto("/o/acme/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/o/acme/$"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    screenshot("login")

    log_in(page, tenant.owner.email, "wrong password", path=page.url)
    expect(page.get_by_role("alert")).to_contain_text("correct")  # "enter a correct e-mail…"
    expect(page).to_have_url(re.compile(r"/login/"))

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/o/acme/$"))  # back where the visitor was going
    expect(page.get_by_role("heading", name="Acme", exact=True)).to_be_visible()
    expect(page.locator("header")).to_contain_text(tenant.owner.email)

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))
    page.goto("/o/acme/")  # the session is gone
    expect(page).to_have_url(re.compile(r"/login/\?next=/o/acme/$"))


def test_password_reset_by_email(page, tenant, mailoutbox):
    page.goto("/login/")
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("E-mail").fill(tenant.owner.email)
    page.get_by_role("button", name="Send the reset link").click()
    expect(page.get_by_role("heading", name="Check your e-mail")).to_be_visible()

    assert len(mailoutbox) == 1 and mailoutbox[0].to == [tenant.owner.email]
    link = re.search(r"https?://\S+/reset/\S+/", mailoutbox[0].body).group(0)
    assert link.startswith(page.url.split("/password-reset/")[0])  # this server, this host

    page.goto(link)
    page.get_by_label("New password", exact=True).fill("a-brand-new-secret-42")
    page.get_by_label("Repeat the new password").fill("a-brand-new-secret-42")
    page.get_by_role("button", name="Set the password").click()
    expect(page.get_by_role("heading", name="Password set")).to_be_visible()
    owner = User.objects.get(pk=tenant.owner.pk)
    assert owner.check_password("a-brand-new-secret-42") and not owner.check_password(PASSWORD)

    page.goto(link)  # the link works once
    expect(page.get_by_text("invalid or was used already")).to_be_visible()

    page.get_by_role("link", name="Ask for a new link").wait_for()
    log_in(page, tenant.owner.email, "a-brand-new-secret-42")
    expect(page).to_have_url(re.compile(r"/o/acme/$"))


def test_dashboard_switcher_and_tenancy(page, tenant, other_tenant, screenshot):
    # Acme: 500 granted, 40 more expiring in 10 days, 200 allocated to Research; a pool team.
    tenant.grant("500")
    tenant.grant("40", expires_at=timezone.now() + timedelta(days=10))
    tenant.allocate("200")
    platform = team_create(
        organization=tenant.org, slug="platform", name="Platform", funding="pool", actor=SYSTEM
    )
    research_key, _ = tenant.key("usage", team=tenant.team)
    platform_key, _ = tenant.key("usage", team=platform)
    spend(research_key, "r1", "12.5", "openai/gpt-4o", prompt=120_000, completion=30_000)
    spend(research_key, "r2", "3.25", "anthropic/claude-sonnet-4", days_ago=2)
    spend(platform_key, "p1", "7.75", "openai/gpt-4o", days_ago=10)
    spend(platform_key, "p-old", "100", "openai/gpt-4o", days_ago=45)  # before the window
    other_tenant.grant("999")

    # The owner of Acme is a viewer of Globex too; Initech is not theirs.
    Membership.objects.create(organization=other_tenant.org, user=tenant.owner, role=Role.VIEWER)
    make_tenant("initech")

    log_in(page, tenant.owner.email)
    expect(page).to_have_url(re.compile(r"/o/acme/$"))  # the first organization by name
    expect(page.get_by_test_id("available")).to_have_text("416.50")  # 540 - 123.50
    expect(page.get_by_test_id("used-today")).to_have_text("12.50")
    # The expiring lot went to Research first (allocations and spending take the earliest
    # expiry first), and Research spent 15.75 of it.
    expect(page.get_by_test_id("expiring")).to_have_text("24.25")
    expect(page.get_by_test_id("spend-totals")).to_contain_text("23.50 credits · 3 requests")
    # The last 24 hours (12.50) run at over twice the 7-day rate (15.75 / 7 a day): the
    # projection follows the surge, 416.50 / 12.50 a day = 33 days.
    expect(page.get_by_test_id("runway")).to_have_text("33 days")

    teams = page.get_by_test_id("teams-table")
    expect(teams.locator("tbody tr")).to_have_count(2)
    research = teams.locator("tr", has_text="Research")
    expect(research).to_contain_text("Own allocation")
    expect(research.locator("td").nth(2)).to_have_text("184.2500")  # 200 - 15.75
    expect(research.locator("td").nth(6)).to_have_text("15.7500")
    expect(teams.locator("tr", has_text="Platform")).to_contain_text("Organization pool")

    models = page.get_by_test_id("models-table").locator("tbody tr")
    expect(models).to_have_count(2)
    expect(models.nth(0)).to_contain_text("openai/gpt-4o")  # the larger spend first
    expect(models.nth(0)).to_contain_text("20.2500")
    expect(models.nth(0)).to_contain_text("86 %")
    expect(models.nth(1)).to_contain_text("anthropic/claude-sonnet-4")
    expect(page.get_by_test_id("recent-table").locator("tbody tr")).to_have_count(4)

    # The chart is drawn by the vendored Chart.js with one bar per UTC day.
    bars = page.evaluate("() => Chart.getChart('spend-chart').data.datasets[0].data")
    assert len(bars) == 30
    assert bars[-1] == 12.5 and bars[-3] == 3.25 and bars[-11] == 7.75
    assert sum(1 for b in bars if b) == 3
    assert page.locator("#spend-chart").bounding_box()["height"] > 200
    screenshot("dashboard")
    page.get_by_text("Show as a table").click()  # the same numbers without JavaScript
    days = page.get_by_test_id("daily-table").locator("tbody tr")
    expect(days).to_have_count(30)
    expect(days.nth(0)).to_contain_text("12.5000")  # newest first

    # The switcher shows both organizations and moves to the other dashboard.
    switcher = page.get_by_label("Organization")
    expect(switcher.locator("option")).to_have_text(["Acme", "Globex"])
    switcher.select_option("globex")
    expect(page).to_have_url(re.compile(r"/o/globex/$"))
    expect(page.get_by_role("heading", name="Globex", exact=True)).to_be_visible()
    expect(page.get_by_test_id("available")).to_have_text("999.00")
    expect(page.get_by_label("Organization")).to_have_value("globex")
    expect(page.get_by_test_id("runway")).to_have_text("—")
    expect(page.get_by_test_id("no-usage")).to_be_visible()  # no empty chart
    screenshot("dashboard-empty")
    page.get_by_label("Organization").select_option("acme")
    expect(page).to_have_url(re.compile(r"/o/acme/$"))

    # Another tenant's dashboard does not exist for this user.
    response = page.goto("/o/initech/")
    assert response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_text("Initech")).to_have_count(0)
    page.goto("/?org=initech")  # the switcher cannot be pointed at it either
    expect(page).to_have_url(re.compile(r"/o/acme/$"))


def test_invitation_for_a_new_user(page, tenant, screenshot):
    _, token = invitation_create(
        organization=tenant.org,
        email="ada@example.test",
        role=Role.ADMIN,
        team=tenant.team,
        team_role=TeamRole.MANAGER,
        actor=SYSTEM,
    )
    page.goto(f"/invitations/{token}/")
    expect(page.get_by_role("heading", name="Join Acme")).to_be_visible()
    expect(page.get_by_text("on the team Research")).to_be_visible()
    page.get_by_label("Your name").fill("Ada Lovelace")
    page.get_by_label("Choose a password").fill("analytical-engine-1843")
    page.get_by_label("Repeat the password").fill("analytical-engine-1842")
    page.get_by_role("button", name="Accept the invitation").click()
    expect(page.get_by_text("The two passwords differ.")).to_be_visible()
    screenshot("invitation")
    assert not User.objects.filter(email="ada@example.test").exists()

    page.get_by_label("Choose a password").fill("analytical-engine-1843")
    page.get_by_label("Repeat the password").fill("analytical-engine-1843")
    page.get_by_role("button", name="Accept the invitation").click()
    expect(page).to_have_url(re.compile(r"/o/acme/$"))
    expect(page.get_by_text("Welcome to Acme.")).to_be_visible()
    expect(page.locator("header")).to_contain_text("ada@example.test")

    ada = User.objects.get(email="ada@example.test")
    assert ada.first_name == "Ada" and ada.check_password("analytical-engine-1843")
    assert Membership.objects.get(organization=tenant.org, user=ada).role == Role.ADMIN
    assert TeamMembership.objects.get(team=tenant.team, user=ada).role == TeamRole.MANAGER

    page.goto(f"/invitations/{token}/")  # single use
    expect(page.get_by_role("heading", name="This invitation cannot be used")).to_be_visible()
    expect(page.get_by_text("accepted")).to_be_visible()


def test_invitation_for_an_existing_user(page, tenant, other_tenant):
    bob = other_tenant.owner  # has an account (in Globex) and is invited to Acme
    _, token = invitation_create(
        organization=tenant.org, email=bob.email, role=Role.BILLING, actor=SYSTEM
    )
    page.goto(f"/invitations/{token}/")
    expect(page).to_have_url(re.compile(rf"/login/\?next=/invitations/{re.escape(token)}/$"))
    expect(page.get_by_text(f"Log in as {bob.email} to accept the invitation.")).to_be_visible()

    log_in(page, bob.email, path=page.url)
    expect(page).to_have_url(re.compile(rf"/invitations/{re.escape(token)}/$"))
    assert not Membership.objects.filter(organization=tenant.org, user=bob).exists()
    page.get_by_role("button", name="Accept the invitation").click()
    expect(page).to_have_url(re.compile(r"/o/acme/$"))
    assert Membership.objects.get(organization=tenant.org, user=bob).role == Role.BILLING
    expect(page.get_by_label("Organization").locator("option")).to_have_text(["Acme", "Globex"])


def test_invitation_opened_by_another_signed_in_user(page, tenant, other_tenant):
    _, token = invitation_create(organization=tenant.org, email="carol@example.test", actor=SYSTEM)
    log_in(page, other_tenant.owner.email)
    page.goto(f"/invitations/{token}/")
    expect(page.get_by_role("alert")).to_contain_text("Log out, then open this link again")
    expect(page.get_by_role("button", name="Accept the invitation")).to_have_count(0)
    page.goto("/invitations/not-a-token/")
    expect(page.get_by_role("heading", name="This invitation cannot be used")).to_be_visible()
    assert not Membership.objects.filter(organization=tenant.org, user=other_tenant.owner).exists()


def test_swagger_ui_is_served_by_the_portal_itself(page):
    """Self-hosted: the API docs load without a CDN (drf-spectacular-sidecar)."""
    external = []
    page.on(
        "request",
        lambda r: (
            external.append(r.url)
            if "127.0.0.1" not in r.url
            and "localhost" not in r.url
            and not r.url.startswith("data:")
            else None
        ),
    )
    page.goto("/api/v1/schema/swagger/")
    expect(page.get_by_role("heading", name=re.compile("Credit portal API"))).to_be_visible()
    expect(page.get_by_text("/api/v1/credits/usage").first).to_be_visible()
    assert external == []


def test_swagger_try_it_out_works_for_a_logged_in_admin(page, tenant):
    """The browser session authenticates the API (CSRF enforced: Swagger UI sends the token),
    in the organization opened last in the pages: "Try it out" changes the organization."""
    log_in(page, tenant.owner.email)
    page.goto("/o/acme/")
    page.goto("/api/v1/schema/swagger/")
    operation = page.locator("#operations-organization-organization_update")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.locator("textarea.body-param__text").fill('{"name": "Acme from Swagger"}')
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    expect(status).to_have_text("200")
    tenant.org.refresh_from_db()
    assert tenant.org.name == "Acme from Swagger"
