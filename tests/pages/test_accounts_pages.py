"""The accounts pages in real Chromium against the live server: create a team, create a key and
read its secret once, invite a member who accepts in a second browser, a viewer who reaches
no teams, keys or members page and sees no other member's e-mail, and long names on a phone.

Screenshots of every accounts page at 1280 and 390 px wide go to PAGES_SCREENSHOT_DIR
(test-output/screenshots by default), named accounts-<page>-<width>.png."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from accounts.models import ApiKey, Membership
from accounts.roles import Role
from accounts.services import invitation_create, team_member_set

from ..conftest import SYSTEM, make_tenant
from .conftest import SCREENSHOTS
from .test_pages import PASSWORD, log_in

pytestmark = pytest.mark.django_db(transaction=True)

WIDTHS = (1280, 390)
# What sticks out of the viewport (outside the scrolling tables and section navigation).
WIDE_ELEMENTS = """() => {
  const width = document.documentElement.clientWidth;
  return [...document.querySelectorAll("body *")]
    .filter((el) => !el.closest("nav.sections, .table-wrap table"))
    .filter((el) => el.getBoundingClientRect().right > width + 1)
    .map((el) => `${el.tagName}.${el.className}#${el.id}`).slice(0, 20);
}"""


def shoot(page, name: str) -> None:
    """Full-page screenshots at desktop and phone width; the phone one must not scroll sideways
    (wide tables scroll inside their card instead)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SCREENSHOTS / f"accounts-{name}-{width}.png"), full_page=True)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        wide = page.evaluate(WIDE_ELEMENTS) if overflow > 1 else []
        assert overflow <= 1, f"{name} scrolls sideways at {width} px by {overflow} px: {wide}"
    page.set_viewport_size({"width": 1280, "height": 900})


def test_owner_creates_a_team_and_a_key_whose_secret_shows_once(page, tenant):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    log_in(page, tenant.owner.email, path="/login/?next=/o/acme/teams/")
    expect(page.get_by_role("heading", name="Teams", level=1)).to_be_visible()
    nav = page.get_by_role("navigation", name="Sections")
    for label in ("Teams", "Members", "Keys", "Audit", "Settings"):
        expect(nav.get_by_role("link", name=label, exact=True)).to_be_visible()
    shoot(page, "teams")

    page.get_by_role("link", name="New team").click()
    page.get_by_role("button", name="Create the team").click()  # empty: errors inline
    expect(page.locator("#id_name_error")).to_contain_text("required")
    expect(page.get_by_label("Name")).to_have_attribute("aria-invalid", "true")
    shoot(page, "team-form-errors")
    page.get_by_label("Name").fill("Platform")
    page.get_by_label("Slug").fill("platform")
    page.get_by_label("Funding").select_option("allocation")
    page.get_by_role("button", name="Create the team").click()
    expect(page.get_by_role("heading", name="Platform", level=1)).to_be_visible()
    expect(page.get_by_role("status").first).to_contain_text("Team Platform created.")
    page.get_by_label("Member", exact=True).select_option(label=tenant.owner.email)
    page.get_by_label("Team role").select_option("manager")
    page.get_by_role("button", name="Add to the team").click()
    expect(page.get_by_test_id("team-members")).to_contain_text(tenant.owner.email)
    shoot(page, "team-detail")

    nav.get_by_role("link", name="Keys", exact=True).click()
    page.get_by_role("link", name="New key").click()
    page.get_by_label("Name").fill("First admin key")
    page.get_by_label("Kind").select_option("management")
    for scope in ("members:read", "keys:read", "keys:write"):
        page.get_by_label(re.compile(f"{scope}: ")).check()
    shoot(page, "key-form")
    page.get_by_role("button", name="Create the key").click()
    secret = page.get_by_test_id("key-secret").input_value()
    assert secret.startswith("sk-")
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("status").last).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shoot(page, "key-created")
    key = ApiKey.objects.get(name="First admin key")
    # The usage scopes come checked; the three ticked are added.
    assert set(key.scopes) == {"credits:read", "usage:read", "usage:write"} | {
        "members:read",
        "keys:read",
        "keys:write",
    }

    page.reload()  # shown once
    expect(page.get_by_text("was shown once")).to_be_visible()
    assert page.get_by_test_id("key-secret").count() == 0

    page.get_by_role("link", name="Back to the keys").click()
    expect(page.get_by_test_id("keys-table")).to_contain_text("First admin key")
    shoot(page, "keys")
    page.get_by_role("link", name="Delete First admin key").click()
    expect(page.get_by_role("heading", name="Delete the key First admin key?")).to_be_visible()
    shoot(page, "confirm")
    page.get_by_role("link", name="Cancel").click()
    expect(page.get_by_test_id("keys-table")).to_contain_text("First admin key")

    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Audit").click()
    expect(page.get_by_test_id("audit-table")).to_contain_text("key.created")
    page.get_by_label("Action").select_option("team.created")  # htmx swaps the results
    expect(page.get_by_test_id("audit-table")).not_to_contain_text("key.created")
    expect(page).to_have_url(re.compile(r"action=team.created"))
    shoot(page, "audit")

    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Settings").click()
    page.get_by_label("Time zone").select_option("Europe/Berlin")
    page.get_by_role("button", name="Save the settings").click()
    expect(page.get_by_role("status").first).to_contain_text("Settings saved.")
    tenant.org.refresh_from_db()
    assert tenant.org.time_zone == "Europe/Berlin"
    shoot(page, "settings")


def test_invite_a_member_who_accepts_in_a_second_browser(
    page, browser, live_server, tenant, mailoutbox
):
    log_in(page, tenant.owner.email, path="/login/?next=/o/acme/members/")
    page.get_by_role("link", name="Invite a member").click()
    page.get_by_label("E-mail").fill("newcomer@acme.test")
    page.get_by_label("Role", exact=True).select_option("member")
    page.get_by_label("Team (optional)").select_option("research")
    shoot(page, "invite")
    page.get_by_role("button", name="Send the invitation").click()
    expect(page.get_by_test_id("invitations-table")).to_contain_text("newcomer@acme.test")
    shoot(page, "members")
    assert len(mailoutbox) == 1
    link = re.search(r"https?://\S+/invitations/\S+/", mailoutbox[0].body).group(0)
    path = "/invitations/" + link.split("/invitations/")[1]

    other = browser.new_context(base_url=live_server.url, viewport={"width": 390, "height": 844})
    try:
        newcomer = other.new_page()
        newcomer.goto(path)
        newcomer.get_by_label("Your name").fill("New Comer")
        newcomer.get_by_label("Choose a password").fill("a-long-new-password-1")
        newcomer.get_by_label("Repeat the password").fill("a-long-new-password-1")
        newcomer.get_by_role("button", name="Accept the invitation").click()
        expect(newcomer).to_have_url(re.compile(r"/o/acme/$"))
        sections = newcomer.get_by_role("navigation", name="Sections")
        expect(sections.get_by_role("link", name="Keys", exact=True)).to_be_visible()
        assert sections.get_by_role("link", name="Members", exact=True).count() == 0
        newcomer.goto("/o/acme/members/")
        expect(newcomer.get_by_role("heading", name="Not found")).to_be_visible()
    finally:
        other.close()

    page.reload()
    expect(page.get_by_test_id("members-table")).to_contain_text("newcomer@acme.test")
    assert Membership.objects.get(user__email="newcomer@acme.test").role == Role.MEMBER


def test_viewer_reaches_no_teams_keys_or_members_and_sees_no_emails(page, tenant):
    viewer = tenant.member(Role.VIEWER, email="viewer@acme.test")
    colleague = tenant.member(email="colleague@acme.test")
    team_member_set(team=tenant.team, user=colleague, actor=SYSTEM)
    tenant.key("usage", user=colleague)
    invitation_create(organization=tenant.org, email="invitee@acme.test", actor=SYSTEM)
    log_in(page, viewer.email, PASSWORD, path="/login/?next=/o/acme/")
    sections = page.get_by_role("navigation", name="Sections")
    for label in ("Teams", "Members", "Keys", "Audit"):
        assert sections.get_by_role("link", name=label, exact=True).count() == 0
    for path in ("/o/acme/teams/", "/o/acme/teams/research/", "/o/acme/keys/", "/o/acme/members/"):
        response = page.goto(path)
        assert response.status == 404, path
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    for path in ("/o/acme/", "/o/acme/settings/"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        text = page.content()
        for email in ("colleague@acme.test", tenant.owner.email, "invitee@acme.test"):
            assert email not in text, (path, email)
    shoot(page, "settings-viewer")


def test_long_names_without_spaces_fit_a_phone(page, tenant):
    """An organization named by one 60-character word, and a long e-mail address, at 390 px:
    the organization switcher (which is as wide as its longest option) cuts the name short, the
    headings break it; no page scrolls sideways, on the long-named organization or another."""
    long_name = "Acme" + "Internationalholdingsandsubsidiaries" + "X" * 20
    assert len(long_name) == 60
    tenant.org.name = long_name
    tenant.org.save()
    email = "aratherlongmailboxnamewithoutspacesorhyphens@acmeinternational.test"
    tenant.owner.email = email
    tenant.owner.save()
    other = make_tenant("globex")
    Membership.objects.create(organization=other.org, user=tenant.owner, role=Role.MEMBER)
    log_in(page, email, path="/login/?next=/o/acme/")
    for path in ("/o/acme/", "/o/acme/me/", "/o/acme/members/", "/o/acme/settings/", "/o/globex/"):
        page.goto(path)
        switcher = page.locator("form.switcher")
        expect(switcher.get_by_label("Organization")).to_be_visible()
        name = path.strip("/").replace("/", "-")
        shoot(page, f"long-names-{name}")  # both widths, no sideways scroll
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        assert switcher.bounding_box()["x"] + switcher.bounding_box()["width"] <= 390, path
    # The name is whole in the switcher's options, and switching still works.
    expect(page.locator("#org-switcher option").first).to_have_text(long_name)
    page.locator("#org-switcher").select_option("acme")
    expect(page).to_have_url(re.compile(r"/o/acme/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(long_name)
