"""The gateway's upstreams pages in real Chromium against the live server: an owner reaches them
from the navigation, creates an upstream (a form with errors first), sees it listed with "Set"
for its key and never the key, edits it leaving the key blank (kept), removes it after the
confirmation page. A member has no link to them.

Screenshots of each page at 1280 and 390 px wide go to SCREENSHOTS
(upstreams-<page>-<width>.png)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from credits.models import Upstream

from .conftest import SCREENSHOTS
from .test_pages import log_in

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-or-v1-page-secret-0123456789"


def shoot(page, name: str) -> None:
    """Full-page screenshots at 1280 and 390 px wide; the page must not scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(150)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        page.screenshot(path=str(SCREENSHOTS / f"upstreams-{name}-{width}.png"), full_page=True)
        assert overflow <= 1, f"{name} scrolls sideways at {width} px by {overflow} px"
    page.set_viewport_size({"width": 1280, "height": 900})


def test_an_owner_creates_edits_and_deletes_an_upstream(page, tenant):
    log_in(page, tenant.owner.email)
    page.goto("/o/acme/")
    page.get_by_test_id("sections").get_by_role("link", name="Upstreams").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Upstreams")
    expect(page.get_by_text("No upstreams yet")).to_be_visible()
    shoot(page, "empty")

    page.get_by_role("link", name="New upstream").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New upstream")
    page.get_by_label("Name").fill("OpenRouter")
    page.get_by_label("Base URL").fill("ftp://openrouter.ai/api/v1")
    page.get_by_role("button", name="Create the upstream").click()
    expect(page.get_by_text("This field is required.")).to_be_visible()  # models: the form's
    page.get_by_label("Models").fill("openai/\nanthropic/claude-3.5-sonnet\n")
    page.get_by_role("button", name="Create the upstream").click()
    expect(page.get_by_text("An http:// or https:// URL.")).to_be_visible()  # the service's
    shoot(page, "form-errors")
    assert not Upstream.objects.exists()

    page.get_by_label("Kind").select_option("openrouter")
    page.get_by_label("Base URL").fill("https://openrouter.ai/api/v1/")
    page.get_by_label("API key", exact=True).fill(KEY)
    page.get_by_label("Timeout (seconds)").fill("45")
    page.get_by_role("button", name="Create the upstream").click()
    expect(page.get_by_role("status")).to_contain_text("Upstream 'OpenRouter' created.")
    row = page.get_by_test_id("upstreams-table").locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("OpenRouter")
    expect(row).to_contain_text("https://openrouter.ai/api/v1")
    expect(row).to_contain_text("openai/, anthropic/claude-3.5-sonnet")
    expect(row).to_contain_text("45 s")
    expect(row.locator('td[data-label="API key"]')).to_have_text("Set")
    assert KEY not in page.content()
    shoot(page, "list")
    upstream = Upstream.objects.get(organization=tenant.org)
    assert upstream.api_key == KEY and upstream.base_url == "https://openrouter.ai/api/v1"
    assert upstream.models == ["openai/", "anthropic/claude-3.5-sonnet"]
    assert upstream.kind == "openrouter" and upstream.enabled

    # Edit: the key is never rendered back; left blank, it is kept.
    page.get_by_role("link", name="Edit OpenRouter").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Edit the upstream")
    expect(page.get_by_label("API key", exact=True)).to_have_value("")
    expect(page.get_by_text("Leave blank to keep the stored key.")).to_be_visible()
    expect(page.get_by_label("Models")).to_have_value("openai/\nanthropic/claude-3.5-sonnet")
    assert KEY not in page.content()
    shoot(page, "edit")
    page.get_by_label("Name").fill("OpenRouter main")
    page.get_by_label("Timeout (seconds)").fill("30")
    page.get_by_label("Enabled").uncheck()
    page.get_by_role("button", name="Save the upstream").click()
    expect(page.get_by_role("status")).to_contain_text("Upstream 'OpenRouter main' saved.")
    expect(row).to_contain_text("30 s")
    expect(row).to_contain_text("Disabled")
    upstream.refresh_from_db()
    assert (upstream.name, upstream.timeout, upstream.enabled) == ("OpenRouter main", 30, False)
    assert upstream.api_key == KEY

    # Remove the key from the edit form.
    page.get_by_role("link", name="Edit OpenRouter main").click()
    page.get_by_label("Remove the stored API key").check()
    page.get_by_role("button", name="Save the upstream").click()
    expect(row.locator('td[data-label="API key"]')).to_have_text("None")
    upstream.refresh_from_db()
    assert upstream.api_key_encrypted == ""

    # Delete after the confirmation page.
    page.get_by_role("link", name="Delete OpenRouter main").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete the upstream?")
    shoot(page, "delete")
    page.get_by_role("button", name="Delete the upstream").click()
    expect(page.get_by_role("status")).to_contain_text("Upstream 'OpenRouter main' deleted.")
    expect(page.get_by_text("No upstreams yet")).to_be_visible()
    assert not Upstream.objects.exists()
    actions = list(
        tenant.org.audit_events.filter(action__startswith="upstream.").values_list(
            "action", flat=True
        )
    )
    assert sorted(actions) == sorted(
        ["upstream.created", "upstream.updated", "upstream.updated", "upstream.deleted"]
    )


def test_a_member_has_no_upstreams_link(page, tenant):
    member = tenant.member(email="member@acme.test")
    log_in(page, member.email)
    page.goto("/o/acme/")
    expect(page.get_by_test_id("sections").get_by_role("link", name="Dashboard")).to_be_visible()
    expect(page.get_by_test_id("sections").get_by_role("link", name="Upstreams")).to_have_count(0)
    assert page.goto("/o/acme/upstreams/").status == 404
