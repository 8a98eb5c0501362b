"""The accounts pages, server side: who may open each page (404 for roles the API answers
nothing), every form's write through its service (audited), validation errors inline and linked
to their fields, confirmation steps before destructive actions, and redirects after POST."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.test import Client
from django.urls import resolve

from accounts.access import Principal
from accounts.models import ApiKey, AuditEvent, Invitation, Membership, TeamMembership
from accounts.pages import page_url
from accounts.roles import Role, TeamRole
from accounts.services import invitation_create, team_member_set

from ..conftest import SYSTEM
from ..factories import UserFactory

pytestmark = pytest.mark.django_db

PAGES = {
    "teams": "/o/acme/teams/",
    "team-create": "/o/acme/teams/new/",
    "team-detail": "/o/acme/teams/research/",
    "team-edit": "/o/acme/teams/research/edit/",
    "members": "/o/acme/members/",
    "member-invite": "/o/acme/members/invite/",
    "keys": "/o/acme/keys/",
    "key-create": "/o/acme/keys/new/",
    "audit": "/o/acme/audit/",
    "org-settings": "/o/acme/settings/",
}
OK, NO = 200, 404
# page: status for owner, admin, billing, member, viewer
EXPECTED = {
    "teams": (OK, OK, OK, NO, NO),
    "team-create": (OK, OK, NO, NO, NO),
    "team-detail": (OK, OK, OK, NO, NO),
    "team-edit": (OK, OK, NO, NO, NO),
    "members": (OK, OK, OK, NO, NO),
    "member-invite": (OK, OK, NO, NO, NO),
    "keys": (OK, OK, OK, OK, NO),
    "key-create": (OK, OK, NO, OK, NO),
    "audit": (OK, OK, OK, NO, NO),
    "org-settings": (OK, OK, OK, OK, OK),
}
ROLES = (Role.OWNER, Role.ADMIN, Role.BILLING, Role.MEMBER, Role.VIEWER)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def user_of(tenant, role: str):
    return tenant.owner if role == Role.OWNER else tenant.member(role)


def errors_linked(html: str, field_id: str) -> bool:
    """The field's input names its error list with aria-describedby, and the list exists."""
    tag = re.search(rf'<(input|select|textarea)[^>]*id="{field_id}"[^>]*>', html)
    return (
        tag is not None
        and f"{field_id}_error" in tag.group(0)
        and 'aria-invalid="true"' in tag.group(0)
        and f'id="{field_id}_error"' in html
    )


@pytest.mark.parametrize("role_index,role", list(enumerate(ROLES)))
def test_who_opens_which_page(tenant, role_index, role):
    client = client_for(user_of(tenant, role))
    got = {name: client.get(url).status_code for name, url in PAGES.items()}
    assert got == {name: codes[role_index] for name, codes in EXPECTED.items()}


def test_page_url_offers_a_page_to_exactly_the_roles_it_opens_for(tenant, rf):
    """`page_url` (the links of pages, e.g. "Manage keys" on "My usage") asks the linked page's
    own rule: a URL for the roles the page answers 200, None for those it answers 404."""
    checked = set()
    for role_index, role in enumerate(ROLES):
        user = user_of(tenant, role)
        client = client_for(user)
        request = rf.get("/")
        request.organization = tenant.org
        request.principal = Principal.for_session(organization=tenant.org, user=user)
        for name, url in PAGES.items():
            match = resolve(url)
            if match.func.page_scope is None:  # the teams pages decide inside the view
                continue
            kwargs = {k: v for k, v in match.kwargs.items() if k != "org"}
            opens = client.get(url).status_code == 200
            assert opens == (EXPECTED[name][role_index] == OK)
            assert page_url(request, match.url_name, **kwargs) == (url if opens else None), (
                role,
                name,
            )
            checked.add(name)
    assert {"keys", "key-create", "members", "audit", "org-settings"} <= checked
    assert page_url(request, "no-such-page") is None


def test_non_members_get_404_everywhere(tenant, other_tenant):
    client = client_for(other_tenant.owner)
    for url in PAGES.values():
        assert client.get(url).status_code == 404, url


def test_navigation_shows_only_sections_the_role_may_open(tenant):
    owner_nav = client_for(tenant.owner).get("/o/acme/settings/").content.decode()
    for label in ("Teams", "Members", "Keys", "Audit", "Settings"):
        assert f">{label}</a>" in owner_nav
    viewer_nav = client_for(tenant.member(Role.VIEWER)).get("/o/acme/settings/").content.decode()
    for label in ("Teams", "Members", "Keys", "Audit"):
        assert f">{label}</a>" not in viewer_nav
    assert 'aria-current="page">Settings</a>' in viewer_nav
    member_nav = client_for(tenant.member()).get("/o/acme/keys/").content.decode()
    assert ">Keys</a>" in member_nav and ">Members</a>" not in member_nav


def test_frame_loads_htmx_and_polls_the_balance_when_the_widget_exists(tenant):
    html = client_for(tenant.owner).get("/o/acme/settings/").content.decode()
    assert "portal/vendor/htmx.min.js" in html
    assert "<script>" not in html and " style=" not in html  # CSP: no inline scripts or styles
    assert ('hx-get="/o/acme/balance/"' in html) == ("every 3s" in html)


def test_viewer_sees_no_other_members_email(tenant):
    viewer = tenant.member(Role.VIEWER, email="viewer@acme.test")
    other = tenant.member(email="colleague@acme.test")
    team_member_set(team=tenant.team, user=other, actor=SYSTEM)
    tenant.key("usage", user=other)
    client = client_for(viewer)
    for url in ["/o/acme/", "/o/acme/settings/", *PAGES.values()]:
        html = client.get(url).content.decode()
        assert "colleague@acme.test" not in html, url
        assert tenant.owner.email not in html, url


# Teams ------------------------------------------------------------------------------------------


def test_create_a_team_audited_and_redirected(tenant):
    client = client_for(tenant.owner)
    response = client.post(
        "/o/acme/teams/new/", {"name": "Platform", "slug": "platform", "funding": "pool"}
    )
    assert response.status_code == 302 and response.url == "/o/acme/teams/platform/"
    event = AuditEvent.objects.get(action="team.created", target_label__contains="platform")
    assert event.actor_user == tenant.owner
    page = client.get(response.url).content.decode()
    assert "Team Platform created." in page and "Organization pool" in page


def test_team_form_errors_inline_and_linked(tenant):
    client = client_for(tenant.owner)
    response = client.post("/o/acme/teams/new/", {"name": "", "slug": "Bad Slug!"})
    html = response.content.decode()
    assert response.status_code == 200
    assert errors_linked(html, "id_slug") and errors_linked(html, "id_name")
    # A taken slug: the service's Conflict lands on the slug field.
    response = client.post(
        "/o/acme/teams/new/", {"name": "Again", "slug": "research", "funding": "pool"}
    )
    html = response.content.decode()
    assert "exists already" in html and errors_linked(html, "id_slug")
    assert not AuditEvent.objects.filter(action="team.created", target_label__contains="again")


def test_edit_a_team(tenant):
    client = client_for(tenant.owner)
    response = client.post(
        "/o/acme/teams/research/edit/", {"name": "Research Lab", "funding": "allocation"}
    )
    assert response.status_code == 302
    tenant.team.refresh_from_db()
    assert tenant.team.name == "Research Lab"
    assert AuditEvent.objects.filter(action="team.updated").exists()


def test_team_members_add_change_and_remove_with_confirmation(tenant):
    alice = tenant.member(email="alice@acme.test")
    client = client_for(tenant.owner)
    url = "/o/acme/teams/research/"
    response = client.post(f"{url}members/", {"member": alice.pk, "role": "manager"})
    assert response.status_code == 302
    place = TeamMembership.objects.get(team=tenant.team, user=alice)
    assert place.role == TeamRole.MANAGER
    assert alice.has_perm("accounts.allocate_team_credits", tenant.team)

    client.post(f"{url}members/{place.pk}/role/", {"role": "member"})
    place.refresh_from_db()
    assert place.role == TeamRole.MEMBER

    confirm = client.get(f"{url}members/{place.pk}/remove/")
    assert confirm.status_code == 200 and "Take off the team" in confirm.content.decode()
    assert TeamMembership.objects.filter(pk=place.pk).exists()  # GET asks, changes nothing
    response = client.post(f"{url}members/{place.pk}/remove/")
    assert response.status_code == 302
    assert not TeamMembership.objects.filter(pk=place.pk).exists()
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"team.member_added", "team.member_changed", "team.member_removed"} <= actions


def test_team_manager_manages_own_team_members_but_makes_no_managers(tenant):
    manager = tenant.member(email="manager@acme.test")
    team_member_set(team=tenant.team, user=manager, role=TeamRole.MANAGER, actor=SYSTEM)
    bob = tenant.member(email="bob@acme.test")
    client = client_for(manager)
    assert client.get("/o/acme/teams/").status_code == 200
    page = client.get("/o/acme/teams/research/").content.decode()
    assert "Add a member" in page and 'value="manager"' not in page.split("Add a member")[1]
    # A manager cannot list the organization's members: the page names none, they type one.
    assert "bob@acme.test" not in page and 'name="email"' in page
    add = "/o/acme/teams/research/members/"
    response = client.post(add, {"email": "bob@acme.test", "role": "manager"})
    assert response.status_code == 400
    assert not TeamMembership.objects.filter(user=bob).exists()
    client.post(add, {"email": "BOB@acme.test", "role": "member"})
    assert TeamMembership.objects.get(user=bob).role == TeamRole.MEMBER
    # Not the teams they do not manage, nor creating teams.
    assert client.get("/o/acme/teams/new/").status_code == 404


def test_allocation_form_posts_to_the_credits_page(tenant):
    from django.urls import NoReverseMatch, reverse

    try:
        target = reverse("team-allocate", kwargs={"org": "acme", "slug": "research"})
    except NoReverseMatch:
        pytest.skip("the credits app has no team-allocate page yet")
    html = client_for(tenant.owner).get("/o/acme/teams/research/").content.decode()
    assert f'action="{target}"' in html and 'name="idempotency_key"' in html
    billing = client_for(tenant.member(Role.BILLING)).get("/o/acme/teams/research/")
    assert f'action="{target}"' not in billing.content.decode()


# Members and invitations ------------------------------------------------------------------------


def test_change_a_members_role_audited(tenant):
    alice = tenant.member(email="alice@acme.test")
    membership = Membership.objects.get(user=alice)
    client = client_for(tenant.owner)
    response = client.post(f"/o/acme/members/{membership.pk}/role/", {"role": "admin"})
    assert response.status_code == 302 and response.url == "/o/acme/members/"
    membership.refresh_from_db()
    assert membership.role == Role.ADMIN
    assert "alice@acme.test is now admin." in client.get(response.url).content.decode()
    assert AuditEvent.objects.filter(action="member.role_changed").exists()


def test_role_hierarchy_refused_with_a_message(tenant):
    admin = tenant.member(Role.ADMIN, email="admin@acme.test")
    alice = tenant.member(email="alice@acme.test")
    membership = Membership.objects.get(user=alice)
    client = client_for(admin)
    page = client.get("/o/acme/members/").content.decode()
    assert f'id="role-{membership.pk}"' in page
    assert 'value="owner"' not in page  # an admin is never offered the owner role
    response = client.post(f"/o/acme/members/{membership.pk}/role/", {"role": "owner"}, follow=True)
    assert "Only an owner" in response.content.decode()
    membership.refresh_from_db()
    assert membership.role == Role.MEMBER
    owner = Membership.objects.get(user=tenant.owner)
    assert client.post(f"/o/acme/members/{owner.pk}/remove/").status_code == 302
    assert Membership.objects.filter(pk=owner.pk).exists()


def test_remove_a_member_after_confirmation(tenant):
    alice = tenant.member(email="alice@acme.test")
    membership = Membership.objects.get(user=alice)
    client = client_for(tenant.owner)
    url = f"/o/acme/members/{membership.pk}/remove/"
    page = client.get(url).content.decode()
    assert "Remove alice@acme.test?" in page and "Remove the member" in page
    assert Membership.objects.filter(pk=membership.pk).exists()
    assert client.post(url).status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert AuditEvent.objects.filter(action="member.removed").exists()


def test_invite_resend_and_revoke(tenant, mailoutbox, django_capture_on_commit_callbacks):
    client = client_for(tenant.owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/o/acme/members/invite/",
            {"email": "New@Acme.test", "role": "member", "team": "research", "team_role": "member"},
        )
    assert response.status_code == 302
    invitation = Invitation.objects.get(email="new@acme.test")
    assert invitation.team == tenant.team and len(mailoutbox) == 1
    page = client.get("/o/acme/members/").content.decode()
    assert "new@acme.test" in page and "Invitation sent to new@acme.test." in page

    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/o/acme/invitations/{invitation.pk}/resend/")
    assert len(mailoutbox) == 2 and mailoutbox[1].to == ["new@acme.test"]
    assert AuditEvent.objects.filter(action="invitation.resent").exists()

    url = f"/o/acme/invitations/{invitation.pk}/revoke/"
    assert "Revoke the invitation" in client.get(url).content.decode()
    invitation.refresh_from_db()
    assert invitation.status == "pending"
    client.post(url)
    invitation.refresh_from_db()
    assert invitation.status == "revoked"
    response = client.post(f"/o/acme/invitations/{invitation.pk}/resend/", follow=True)
    assert "This invitation is revoked." in response.content.decode()


def test_invite_errors_inline(tenant):
    client = client_for(tenant.member(Role.ADMIN))
    response = client.post("/o/acme/members/invite/", {"email": "nope", "role": "member"})
    assert errors_linked(response.content.decode(), "id_email")
    response = client.post("/o/acme/members/invite/", {"email": "x@acme.test", "role": "owner"})
    assert errors_linked(response.content.decode(), "id_role")  # not offered to an admin
    response = client.post(
        "/o/acme/members/invite/", {"email": tenant.owner.email, "role": "member"}
    )
    assert "is a member already" in response.content.decode()
    assert not Invitation.objects.exists()


def test_resend_api(tenant, mailoutbox, django_capture_on_commit_callbacks):
    invitation, _ = invitation_create(organization=tenant.org, email="b@acme.test", actor=SYSTEM)
    _key, secret = tenant.key("management", scopes=["members:write", "members:read"])
    api = tenant.client(secret)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/invitations/{invitation.pk}/resend")
    assert response.status_code == 200 and response.json()["email"] == "b@acme.test"
    assert [m.to for m in mailoutbox][-1] == ["b@acme.test"]
    _key, reader = tenant.key("management", scopes=["members:read"])
    response = tenant.client(reader).post(f"/api/v1/invitations/{invitation.pk}/resend")
    assert response.status_code == 403
    assert tenant.client(secret).post("/api/v1/invitations/999999/resend").status_code == 404


# API keys ---------------------------------------------------------------------------------------


def test_create_a_management_key_secret_shown_once(tenant):
    client = client_for(tenant.owner)
    response = client.post(
        "/o/acme/keys/new/",
        {
            "name": "Admin key",
            "kind": "management",
            "scopes": ["members:read", "keys:read"],
            "limit": "25",
            "limit_reset": "monthly",
        },
    )
    assert response.status_code == 302
    key = ApiKey.objects.get(name="Admin key")
    assert response.url == f"/o/acme/keys/{key.hash}/created/"
    assert key.scopes == ["keys:read", "members:read"] and key.limit == 25
    page = client.get(response.url).content.decode()
    secret = re.search(r'data-testid="key-secret"', page) and re.search(r'value="(sk-[^"]+)"', page)
    assert secret, page
    from accounts.authentication import hash_secret

    assert hash_secret(secret.group(1)) == key.hash
    again = client.get(response.url).content.decode()
    assert secret.group(1) not in again and "was shown once" in again
    assert AuditEvent.objects.filter(action="key.created").exists()


def test_key_form_errors_inline(tenant):
    client = client_for(tenant.owner)
    response = client.post(
        "/o/acme/keys/new/",
        {"name": "", "kind": "usage", "scopes": ["members:write"], "expires_at": "2001-01-01"},
    )
    html = response.content.decode()
    assert errors_linked(html, "id_name") and errors_linked(html, "id_expires_at")
    response = client.post(
        "/o/acme/keys/new/", {"name": "x", "kind": "usage", "scopes": ["members:write"]}
    )
    assert "cannot hold: members:write" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_key_form_binds_the_member_chosen(tenant, other_tenant):
    """The member a key acts for is looked up in this organization (`member_by_email`): a member
    binds it; someone who is only another organization's member is refused on the form."""
    member = tenant.member(Role.MEMBER, email="bound@acme.test")
    client = client_for(tenant.owner)
    response = client.post(
        "/o/acme/keys/new/",
        {"name": "For them", "kind": "usage", "member": member.email, "scopes": ["usage:write"]},
    )
    assert response.status_code == 302, response.content.decode()[:500]
    assert ApiKey.objects.get(name="For them").user == member
    response = client.post(
        "/o/acme/keys/new/",
        {"name": "Not theirs", "kind": "usage", "member": other_tenant.owner.email},
    )
    assert response.status_code == 200 and errors_linked(response.content.decode(), "id_member")
    assert not ApiKey.objects.filter(name="Not theirs").exists()


def test_member_sees_and_makes_only_own_usage_keys(tenant):
    alice = tenant.member(email="alice@acme.test")
    bob = tenant.member(email="bob@acme.test")
    tenant.key("usage", user=bob)
    client = client_for(alice)
    page = client.get("/o/acme/keys/new/").content.decode()
    assert 'value="management"' not in page and "bob@acme.test" not in page
    response = client.post(
        "/o/acme/keys/new/", {"name": "Mine", "kind": "usage", "scopes": ["usage:write"]}
    )
    assert response.status_code == 302
    key = ApiKey.objects.get(name="Mine")
    assert key.user == alice and key.kind == "usage"
    page = client.get("/o/acme/keys/").content.decode()
    assert "Mine" in page and "usage key" not in page  # bob's key is not listed
    bobs = ApiKey.objects.get(user=bob)
    assert client.get(f"/o/acme/keys/{bobs.hash}/").status_code == 404
    assert client.post(f"/o/acme/keys/{bobs.hash}/delete/").status_code == 404
    assert not ApiKey.objects.get(pk=bobs.pk).deleted_at
    response = client.post("/o/acme/keys/new/", {"name": "Admin", "kind": "management"})
    assert response.status_code == 200 and not ApiKey.objects.filter(name="Admin").exists()


def test_edit_disable_enable_and_delete_a_key(tenant):
    key, _ = tenant.key("usage", scopes=["usage:read"])
    client = client_for(tenant.owner)
    response = client.post(
        f"/o/acme/keys/{key.hash}/",
        {
            "name": "Renamed",
            "scopes": ["usage:read", "usage:write"],
            "limit": "",
            "limit_reset": "",
        },
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.name == "Renamed" and key.scopes == ["usage:read", "usage:write"]

    client.post(f"/o/acme/keys/{key.hash}/toggle/")
    key.refresh_from_db()
    assert key.disabled
    client.post(f"/o/acme/keys/{key.hash}/toggle/")
    key.refresh_from_db()
    assert not key.disabled

    page = client.get(f"/o/acme/keys/{key.hash}/delete/").content.decode()
    assert "Delete the key Renamed?" in page
    key.refresh_from_db()
    assert key.deleted_at is None
    assert client.post(f"/o/acme/keys/{key.hash}/delete/").status_code == 302
    key.refresh_from_db()
    assert key.deleted_at is not None
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    assert actions.count("key.updated") == 3 and "key.deleted" in actions


def test_admin_cannot_change_an_owners_key(tenant):
    key, _ = tenant.key("usage", user=tenant.owner)
    client = client_for(tenant.member(Role.ADMIN))
    response = client.post(f"/o/acme/keys/{key.hash}/toggle/", follow=True)
    assert "above your role" in response.content.decode()
    key.refresh_from_db()
    assert not key.disabled


# Audit log and settings --------------------------------------------------------------------------


def test_audit_log_filters_and_keyset_paging(tenant, monkeypatch):
    from accounts import views_organization

    monkeypatch.setattr(views_organization, "AUDIT_PAGE_SIZE", 2)
    for _ in range(3):
        tenant.key("usage", scopes=[])
    client = client_for(tenant.owner)
    page = client.get("/o/acme/audit/?action=key.created").content.decode()
    assert page.count("<code>key.created</code>") == 2 and "Older" in page
    older = re.search(r'href="\?([^"]*before=\d+)"', page).group(1).replace("&amp;", "&")
    page2 = client.get(f"/o/acme/audit/?{older}").content.decode()
    assert page2.count("<code>key.created</code>") == 1 and "Newer" in page2
    assert "<code>team.created</code>" not in page2
    fragment = client.get(
        "/o/acme/audit/?action=team.created",
        headers={"HX-Request": "true", "HX-Target": "audit-results"},
    ).content.decode()
    assert "<h1>" not in fragment and "<code>team.created</code>" in fragment
    assert "No events match" in client.get("/o/acme/audit/?actor=nobody").content.decode()
    bad = client.get("/o/acme/audit/?since=2025-02-01&until=2025-01-01").content.decode()
    assert errors_linked(bad, "id_until")


def test_settings_update_time_zone_and_currency(tenant):
    client = client_for(tenant.owner)
    data = {
        "name": "Acme AI",
        "billing_email": "billing@acme.test",
        "billing_address": "1 Road",
        "tax_id": "DE123",
        "currency": "EUR",
        "time_zone": "Europe/Berlin",
    }
    response = client.post("/o/acme/settings/", data)
    assert response.status_code == 302
    tenant.org.refresh_from_db()
    assert (tenant.org.time_zone, tenant.org.currency, tenant.org.name) == (
        "Europe/Berlin",
        "EUR",
        "Acme AI",
    )
    assert AuditEvent.objects.filter(action="organization.updated").exists()
    response = client.post("/o/acme/settings/", data | {"time_zone": "Mars/Olympus"})
    assert errors_linked(response.content.decode(), "id_time_zone")


def test_settings_read_only_without_org_write(tenant):
    client = client_for(tenant.member(Role.VIEWER))
    page = client.get("/o/acme/settings/").content.decode()
    assert "disabled" in page and "Save the settings" not in page
    assert client.post("/o/acme/settings/", {"name": "Hacked"}).status_code == 403
    tenant.org.refresh_from_db()
    assert tenant.org.name == "Acme"


def test_organization_api_time_zone_and_currency(tenant):
    _key, secret = tenant.key("management", scopes=["org:read", "org:write"])
    api = tenant.client(secret)
    response = api.patch("/api/v1/organization", {"time_zone": "Asia/Tokyo", "currency": "JPY"})
    assert response.status_code == 200
    assert response.json()["time_zone"] == "Asia/Tokyo" and response.json()["currency"] == "JPY"
    response = api.patch("/api/v1/organization", {"time_zone": "Nowhere/Land"})
    assert response.status_code == 400
    assert "time_zone" in response.json()["error"]["metadata"]["errors"]


def test_new_user_without_organization_is_not_crashed_by_the_frame():
    client = client_for(UserFactory())
    assert client.get("/").status_code == 200


def test_audit_log_shows_changes_as_json(tenant):
    """A change's `before` and `after` read as JSON (`null`, `false`, amounts as decimal text),
    not as the Python repr of a dict (`None`, `False`, `Decimal(...)`)."""
    from credits.services.budgets import budget_create, budget_delete

    budget = budget_create(
        organization=tenant.org, scope="organization", period="monthly", limit="0", actor=SYSTEM
    )
    budget_delete(budget=budget, actor=SYSTEM)
    page = client_for(tenant.owner).get("/o/acme/audit/?action=budget.deleted").content.decode()
    assert "organization monthly budget 0.000000000000" in page
    (before,) = re.findall(r'<code class="json">(.*?)</code>', page, re.S)
    snapshot = json.loads(html.unescape(before))
    assert snapshot["team"] is None and snapshot["utc_windows"] is False
    assert snapshot["limit"] == snapshot["grace"] == "0.000000000000"
    assert "None" not in before and "&lt;" not in before
