"""The permission layer inside one organization (accounts/access.py), through the API as an
integration calls it. Each reproduction reported in issue 7 is a test here: each answered 2xx
before the layer existed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from accounts.models import ApiKey, AuditEvent, Invitation, Membership
from accounts.roles import KIND_SCOPES, ROLE_SCOPES, Role, TeamRole
from accounts.services import team_create, team_member_set
from credits.models import Hold, UsageEvent
from credits.services import ledger_reverse

from ..conftest import SYSTEM

HOLDS = "/api/v1/credits/authorizations"


@pytest.fixture
def alpha(tenant, prices):
    """A pool of 10, team `alpha` (2 allocated) with a usage key, and an organization key."""
    tenant.grant("10")
    team = team_create(organization=tenant.org, slug="alpha", name="Alpha", actor=SYSTEM)
    tenant.allocate("2", team=team)
    _, alpha_secret = tenant.key("usage", team=team)
    _, org_secret = tenant.key("usage")
    return team, tenant.client(alpha_secret), tenant.client(org_secret)


def test_a_team_key_cannot_capture_or_void_the_pools_holds(tenant, alpha):
    _, alpha_client, org_client = alpha
    made = org_client.post(HOLDS, {"id": "pool-hold", "amount": "1"}, format="json")
    assert made.status_code == 201, made.content
    hold = Hold.objects.get(idempotency_key="pool-hold")
    assert made.json()["id"] == str(hold.public_id)  # the public id, never the sequential pk
    for ref in (str(hold.public_id), "pool-hold", str(hold.pk)):
        capture = alpha_client.post(
            f"{HOLDS}/{ref}/capture", {"model": "gpt-4o", "prompt_tokens": 10}, format="json"
        )
        void = alpha_client.post(f"{HOLDS}/{ref}/void")
        assert (capture.status_code, void.status_code) == (404, 404), ref
    hold.refresh_from_db()
    assert hold.status == Hold.Status.PENDING and not UsageEvent.objects.exists()
    # The key that made it (organization-wide) may: the route works, the binding refused.
    assert org_client.post(f"{HOLDS}/pool-hold/void").json()["status"] == "voided"


def test_a_team_key_sees_its_own_team_only(tenant, alpha):
    team, alpha_client, org_client = alpha
    org_client.post(HOLDS, {"id": "h-pool", "amount": "1"}, format="json")
    made = alpha_client.post(HOLDS, {"id": "h-alpha", "amount": "1"}, format="json")
    assert made.status_code == 201
    accounts = alpha_client.get("/api/v1/credits/accounts").json()["results"]
    assert [(a["kind"], a["team"]) for a in accounts] == [("team", "alpha")]
    lots = alpha_client.get("/api/v1/credits/lots").json()["results"]
    assert lots and {lot["team"] for lot in lots} == {"alpha"}
    balance = alpha_client.get("/api/v1/credits/balance").json()
    assert Decimal(balance["available"]) == 1  # 2 allocated, 1 held
    assert balance["total_credited"] is None and balance["pool_balance"] is None
    pool_id = tenant.org.ledger_accounts.get(kind="pool").pk
    assert alpha_client.get(f"/api/v1/credits/accounts/{pool_id}/entries").status_code == 404


def test_a_capture_beyond_the_hold_is_held_to_the_keys_limit(tenant, prices):
    tenant.grant("10")
    key, secret = tenant.key("usage", limit="0.10")
    client = tenant.client(secret)
    assert client.post(HOLDS, {"id": "h", "amount": "0.05"}, format="json").status_code == 201
    refused = client.post(f"{HOLDS}/h/capture", {"model": "gpt-4o", "cost": "1.00"}, format="json")
    assert refused.status_code == 402, refused.content
    error = refused.json()["error"]
    assert error["metadata"]["type"] == "budget_exceeded"
    assert error["metadata"]["budget"]["scope"] == "api_key"
    assert not UsageEvent.objects.exists()
    assert Hold.objects.get(idempotency_key="h").status == Hold.Status.PENDING
    # Within the limit, a capture above the hold goes through.
    ok = client.post(f"{HOLDS}/h/capture", {"model": "gpt-4o", "cost": "0.08"}, format="json")
    assert ok.status_code == 201, ok.content


def test_an_empty_scope_list_means_no_scopes(tenant):
    _, secret = tenant.key("management", user=tenant.owner)
    owner = tenant.client(secret)
    made = owner.post("/api/v1/keys", {"name": "none", "kind": "management", "scopes": []})
    assert made.status_code == 201, made.content
    assert made.json()["data"]["scopes"] == []
    blank = tenant.client(made.json()["key"])
    assert blank.get("/api/v1/organization").status_code == 403
    # Omitted: the creator's scopes within the kind.
    usage = owner.post("/api/v1/keys", {"name": "usage", "kind": "usage"}).json()["data"]
    assert set(usage["scopes"]) == KIND_SCOPES["usage"]
    # A patch to [] takes every scope away.
    patched = owner.patch(f"/api/v1/keys/{usage['hash']}", {"scopes": []}, format="json")
    assert patched.status_code == 200 and patched.json()["data"]["scopes"] == []


def test_a_key_cannot_grant_scopes_its_creator_lacks(tenant):
    admin = tenant.member(Role.ADMIN)
    _, secret = tenant.key("management", user=admin)
    client = tenant.client(secret)
    before = ApiKey.objects.count()
    for scopes in (["billing:write"], ["org:read", "billing:write"]):
        body = {"name": "x", "kind": "management", "scopes": scopes}
        response = client.post("/api/v1/keys", body)
        assert response.status_code == 403, response.content
        assert response.json()["error"]["metadata"]["scopes"] == ["billing:write"]
    assert ApiKey.objects.count() == before
    omitted = client.post("/api/v1/keys", {"name": "y", "kind": "management"}).json()["data"]
    assert "billing:write" not in omitted["scopes"]
    target = omitted["hash"]
    patched = client.patch(f"/api/v1/keys/{target}", {"scopes": ["billing:write"]}, format="json")
    assert patched.status_code == 403
    assert "billing:write" not in ApiKey.objects.get(hash=target).scopes


def test_the_role_hierarchy(tenant):
    admin = tenant.member(Role.ADMIN)
    _, secret = tenant.key("management", user=admin)
    client = tenant.client(secret)
    mine = Membership.objects.get(organization=tenant.org, user=admin)
    owners = Membership.objects.get(organization=tenant.org, user=tenant.owner)
    events = AuditEvent.objects.count()
    # An admin key cannot make its own member an owner, nor change its own role at all.
    for role in ("owner", "viewer"):
        response = client.patch(f"/api/v1/members/{mine.pk}", {"role": role}, format="json")
        assert response.status_code == 403, response.content
    # ... nor invite owners, nor touch the owner.
    invite = client.post("/api/v1/invitations", {"email": "boss@acme.test", "role": "owner"})
    assert invite.status_code == 403
    assert client.patch(f"/api/v1/members/{owners.pk}", {"role": "admin"}).status_code == 403
    assert client.delete(f"/api/v1/members/{owners.pk}").status_code == 403
    assert AuditEvent.objects.count() == events and not Invitation.objects.exists()
    mine.refresh_from_db()
    assert mine.role == Role.ADMIN
    # Up to admin it may.
    member = tenant.member(Role.MEMBER)
    theirs = Membership.objects.get(organization=tenant.org, user=member)
    assert client.patch(f"/api/v1/members/{theirs.pk}", {"role": "admin"}).status_code == 200
    invited = client.post("/api/v1/invitations", {"email": "a@acme.test", "role": "admin"})
    assert invited.status_code == 201
    # An owner grants the owner role.
    _, owner_secret = tenant.key("management", user=tenant.owner)
    owner = tenant.client(owner_secret)
    assert owner.patch(f"/api/v1/members/{mine.pk}", {"role": "owner"}).status_code == 200


def test_a_key_of_no_member_is_capped_at_admin(tenant):
    _, secret = tenant.key("management")
    client = tenant.client(secret)
    owners = Membership.objects.get(organization=tenant.org, user=tenant.owner)
    assert client.patch(f"/api/v1/members/{owners.pk}", {"role": "member"}).status_code == 403
    invite = client.post("/api/v1/invitations", {"email": "boss@acme.test", "role": "owner"})
    assert invite.status_code == 403


def test_a_team_manager_reclaims_but_never_draws_on_the_pool(tenant, alpha):
    team, _, _ = alpha
    manager = tenant.member(Role.MEMBER)
    team_member_set(team=team, user=manager, role=TeamRole.MANAGER, actor=SYSTEM)
    _, secret = tenant.key("management", user=manager)
    client = tenant.client(secret)
    body = {"team": "alpha", "amount": "0.5"}
    assert client.post("/api/v1/credits/allocations", body).status_code == 403
    reclaimed = client.post("/api/v1/credits/allocations", {**body, "direction": "reclaim"})
    assert reclaimed.status_code == 201, reclaimed.content
    # The manager puts a member on the team, but cannot make managers.
    other = tenant.member(Role.MEMBER)
    add = {"email": other.email}
    assert client.post("/api/v1/teams/alpha/members", add).status_code == 200
    manager_role = {**add, "role": "manager"}
    assert client.post("/api/v1/teams/alpha/members", manager_role).status_code == 403
    # The default team is not theirs.
    assert client.post("/api/v1/teams/research/members", add).status_code in (403, 404)


def test_a_member_bound_key_sees_its_members_usage_only(tenant, prices):
    tenant.grant("10")
    tenant.allocate("5")
    member = tenant.member(Role.MEMBER, team=tenant.team)
    _, mine = tenant.key("usage", user=member)
    _, others = tenant.key("usage")
    event = {"model": "gpt-4o", "prompt_tokens": 10}
    for secret, id in ((mine, "m"), (others, "o")):
        made = tenant.client(secret).post("/api/v1/credits/usage", {"id": id, **event})
        assert made.status_code == 201
    listed = tenant.client(mine).get("/api/v1/credits/usage").json()["results"]
    assert [r["id"] for r in listed] == ["m"]
    assert tenant.client(mine).get("/api/v1/generation", {"id": "o"}).status_code == 404
    report = tenant.client(mine).get("/api/v1/credits/report", {"period": "monthly"}).json()
    assert report["totals"]["events"] == 1


def test_reports_and_key_usage_agree_with_the_ledger_after_a_reversal(tenant, prices):
    tenant.grant("10")
    key, secret = tenant.key("management")
    client = tenant.client(secret)
    for i in (1, 2):
        body = {"id": f"r{i}", "model": "gpt-4o", "cost": "0.25"}
        assert client.post("/api/v1/credits/usage", body).status_code == 201
    ledger_reverse(txn=UsageEvent.objects.get(event_id="r1").transaction, actor=SYSTEM)
    report = client.get("/api/v1/credits/report", {"period": "monthly"}).json()
    assert Decimal(report["totals"]["cost"]) == Decimal("0.25")
    balance = client.get("/api/v1/credits/balance").json()
    assert Decimal(balance["total_used"]) == Decimal("0.25")
    assert Decimal(balance["available"]) == Decimal("9.75")
    credits = client.get("/api/v1/credits").json()["data"]
    assert Decimal(str(credits["total_usage"])) == Decimal("0.25")
    listed = client.get(f"/api/v1/keys/{key.hash}").json()["data"]
    assert Decimal(str(listed["usage"])) == Decimal("0.25")


def test_a_members_session_authenticates_the_api_with_csrf(tenant, client):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(tenant.owner)
    read = client.get("/api/v1/organization", HTTP_X_ORGANIZATION="acme")
    assert read.status_code == 200 and read.json()["slug"] == "acme"
    # A write without the CSRF token is refused; the token makes it.
    write = client.patch("/api/v1/organization", '{"name": "X"}', content_type="application/json")
    assert write.status_code == 403
    page = client.get("/o/acme/")
    token = page.cookies["csrftoken"].value
    ok = client.patch(
        "/api/v1/organization",
        '{"name": "Acme Renamed"}',
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert ok.status_code == 200, ok.content
    # The session's member role applies: a viewer reads figures but cannot list members.
    viewer = tenant.member(Role.VIEWER)
    session = Client()
    session.force_login(viewer)
    headers = {"HTTP_X_ORGANIZATION": "acme"}
    assert session.get("/api/v1/credits/balance", **headers).status_code == 200
    assert session.get("/api/v1/members", **headers).status_code == 403
    assert ROLE_SCOPES[Role.VIEWER] == {"org:read", "credits:read", "usage:read"}


def test_retrying_another_teams_event_id_shows_nothing_of_it(tenant, alpha):
    team, alpha_client, org_client = alpha
    body = {"id": "shared-id", "model": "gpt-4o", "cost": "0.5"}
    assert org_client.post("/api/v1/credits/usage", body).status_code == 201
    single = alpha_client.post("/api/v1/credits/usage", body)
    assert single.status_code == 409 and "balance_after" not in single.content.decode()
    batch = alpha_client.post("/api/v1/credits/usage", {"events": [body]}, format="json")
    (result,) = batch.json()["results"]
    assert result["status"] == 409 and "cost" not in result
    assert UsageEvent.objects.filter(event_id="shared-id").count() == 1
    # The key that recorded it gets its first result back.
    assert org_client.post("/api/v1/credits/usage", body).status_code == 200


def test_listing_keys_costs_the_same_for_any_number(tenant, django_assert_max_num_queries):
    _, secret = tenant.key("management", user=tenant.owner)
    client = tenant.client(secret)
    for _ in range(3):
        tenant.key("usage", user=tenant.member(Role.MEMBER))
    # 9: the keys' usage is one read of the rollups' mark and one of the rollups and their tail
    # (`key_usage_totals`), whatever the keys' history.
    with django_assert_max_num_queries(9) as few:
        assert len(client.get("/api/v1/keys").json()["data"]) == 4
    for _ in range(10):
        tenant.key("usage", user=tenant.member(Role.VIEWER))
    with django_assert_max_num_queries(len(few)):
        data = client.get("/api/v1/keys").json()["data"]
    assert len(data) == 14
    # each bound key's scopes follow its member's role
    usage_keys = [d for d in data if d["kind"] == "usage"]
    viewer_scopes = {frozenset(d["scopes"]) for d in usage_keys} - {
        frozenset(KIND_SCOPES["usage"])  # the members' keys
    }
    assert viewer_scopes == {frozenset({"credits:read", "usage:read"})}


def test_team_list_is_the_teams_it_may_see(tenant, alpha, other_tenant):
    """`Principal.team_list` (compiled SQL for a team-bound or organization-wide principal)
    reads what `teams()` does, in its order, for each kind of principal, and never a team of
    another organization."""
    from accounts.access import Principal
    from accounts.services import apikey_create

    team, _, _ = alpha
    team_create(organization=other_tenant.org, slug="alpha", name="Alpha", actor=SYSTEM)
    member = tenant.member(Role.MEMBER, email="m@acme.test")
    team_member_set(team=team, user=member, role=TeamRole.MEMBER, actor=SYSTEM)
    principals = {
        "owner": Principal.for_membership(Membership.objects.get(user=tenant.owner)),
        "member": Principal.for_membership(Membership.objects.get(user=member)),
        "team key": Principal.for_key(ApiKey.objects.get(team=team)),
        "org key": Principal.for_key(ApiKey.objects.get(organization=tenant.org, team=None)),
    }
    for name, principal in principals.items():
        for _ in range(7):  # past psycopg's prepare threshold: the prepared statement too
            listed = principal.team_list()
            assert listed == list(principal.teams()), name
            assert all(t.organization_id == tenant.org.pk for t in listed), name
    other_key, _ = apikey_create(
        organization=tenant.org, name="r", kind="usage", team=tenant.team, actor=SYSTEM
    )
    assert [t.slug for t in principals["owner"].team_list()] == ["alpha", "research"]
    assert [t.slug for t in principals["member"].team_list()] == ["alpha"]
    assert [t.slug for t in principals["team key"].team_list()] == ["alpha"]
    assert [t.slug for t in Principal.for_key(other_key).team_list()] == ["research"]


@pytest.mark.parametrize("named", ["globex", "no-such-org"])
def test_a_session_naming_an_organization_it_is_not_in_is_told_so(tenant, other_tenant, named):
    client = APIClient()
    client.force_login(tenant.owner)
    response = client.get("/api/v1/credits/balance", HTTP_X_ORGANIZATION=named)
    assert response.status_code == 403, response.content
    # the same answer whether the organization exists or not
    assert response.json()["error"]["message"] == (
        f"You are not a member of an organization '{named}'."
    )


def test_credits_of_a_key_bound_to_an_owner_leave_what_is_left(tenant, prices):
    """`GET /api/v1/credits` (OpenRouter's): total_credits - total_usage is what is left, also
    for a key bound to a member of the whole organization, whose usage figures are theirs."""
    tenant.grant("100")
    _, org_usage = tenant.key("usage")
    event = {"id": "u1", "model": "gpt-4o", "cost": "2.5"}
    assert tenant.client(org_usage).post("/api/v1/credits/usage", event).status_code == 201
    _, owners = tenant.key("management", user=tenant.owner)

    data = tenant.client(owners).get("/api/v1/credits").json()["data"]
    balance = tenant.client(owners).get("/api/v1/credits/balance").json()

    assert Decimal(str(data["total_credits"])) - Decimal(str(data["total_usage"])) == Decimal(
        balance["available"]
    )
    assert Decimal(balance["available"]) == Decimal("97.5")
