"""axe-core (from npm, node_modules/axe-core) run by Chromium on every page of the portal: no
critical or serious violation on any of them, for an owner and for a member. Pages are named by
URL; a page whose URL name does not resolve (not built yet) is left out, and said so."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import NoReverseMatch, reverse

from accounts.models import Invitation, Membership
from accounts.roles import Role
from accounts.services import invitation_create, team_member_set
from credits.services.upstreams import upstream_create

from ..conftest import SYSTEM
from .test_pages import PASSWORD, log_in

pytestmark = pytest.mark.django_db(transaction=True)

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("critical", "serious")


def axe_inject(page) -> None:
    """Load axe-core into the page. Not with a <script> tag, which the portal's
    Content-Security-Policy refuses (inline script): evaluated through the DevTools protocol,
    which the page's CSP does not govern."""
    page.evaluate(AXE.read_text())


# (URL name, kwargs beyond org): the organization pages of both apps.
ORG_PAGES = [
    ("dashboard", {}),
    ("usage", {}),
    ("ledger", {}),
    ("me", {}),
    ("teams", {}),
    ("team-create", {}),
    ("team-detail", {"slug": "research"}),
    ("team-edit", {"slug": "research"}),
    ("members", {}),
    ("member-invite", {}),
    ("keys", {}),
    ("key-create", {}),
    ("audit", {}),
    ("org-settings", {}),
    ("billing-openrouter", {}),
    ("billing-openrouter-connection", {}),
    ("billing-exports", {}),
    ("upstreams", {}),
    ("upstream-create", {}),
]
MEMBER_PAGES = ["dashboard", "usage", "me", "keys", "key-create", "org-settings"]


def url_of(name: str, **kwargs) -> str | None:
    try:
        return reverse(name, kwargs=kwargs)
    except NoReverseMatch:
        return None


def violations(page, path: str) -> list[str]:
    response = page.goto(path)
    assert response is not None and response.status == 200, (path, response and response.status)
    page.wait_for_load_state("networkidle")
    axe_inject(page)
    result = page.evaluate("axe.run()")
    assert result["passes"], f"axe checked nothing on {path}"
    return [
        f"{path}: {v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(n["target"][0] for n in v["nodes"][:3])
        for v in result["violations"]
        if v["impact"] in SERIOUS
    ]


@pytest.fixture
def data(tenant):
    """A tenant with something on every page: a member on the team, keys, an invitation, an
    upstream."""
    member = tenant.member(email="member@acme.test")
    team_member_set(team=tenant.team, user=member, actor=SYSTEM)
    tenant.key("usage", user=member)
    tenant.key("management")
    invitation_create(organization=tenant.org, email="invitee@acme.test", actor=SYSTEM)
    upstream_create(
        organization=tenant.org, name="OpenRouter", kind="openrouter",
        base_url="https://openrouter.ai/api/v1", models=["openai/"], api_key="sk-or-x",
        actor=SYSTEM,
    )  # fmt: skip
    return tenant, member


def test_axe_on_every_page_as_owner(page, data):
    tenant, _member = data
    assert AXE.is_file(), "npm ci installs axe-core (make static)"
    log_in(page, tenant.owner.email)
    paths = [url_of(name, org="acme", **kwargs) for name, kwargs in ORG_PAGES]
    key = tenant.org.keys.first()
    invitation = Invitation.objects.first()
    member = Membership.objects.get(user__email="member@acme.test")
    upstream = tenant.org.upstreams.get()
    paths += [
        url_of("upstream-edit", org="acme", id=upstream.public_id),
        url_of("upstream-delete", org="acme", id=upstream.public_id),
        url_of("key-edit", org="acme", hash=key.hash),
        url_of("key-delete", org="acme", hash=key.hash),
        url_of("member-remove", org="acme", pk=member.pk),
        url_of("invitation-revoke", org="acme", pk=invitation.pk),
    ]
    found = []
    for path in filter(None, paths):
        found += violations(page, path)
    # A form showing its errors.
    page.goto(url_of("team-create", org="acme"))
    page.get_by_role("button", name="Create the team").click()
    axe_inject(page)
    result = page.evaluate("axe.run()")
    found += [v["id"] for v in result["violations"] if v["impact"] in SERIOUS]
    assert found == [], "\n".join(found)


def test_axe_as_member_and_on_the_public_pages(page, data, browser, live_server):
    _tenant, member = data
    found = []
    for path in ("/login/", "/password-reset/"):
        found += violations(page, path)
    log_in(page, member.email, PASSWORD)
    for name in MEMBER_PAGES:
        path = url_of(name, org="acme")
        if path:
            found += violations(page, path)
    assert Membership.objects.get(user=member).role == Role.MEMBER
    assert found == [], "\n".join(found)
