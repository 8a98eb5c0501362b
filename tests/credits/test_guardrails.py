"""OpenRouter-compatible guardrails (`/api/v1/guardrails`): CRUD, key and member assignments,
their budgets (limit_usd, UTC windows, linked by `Budget.guardrail`) enforced in every debit, and
`allowed_models` enforced at authorization."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import AuditEvent
from accounts.roles import Role
from credits.models import Budget, Guardrail, GuardrailKeyAssignment, GuardrailMemberAssignment

pytestmark = pytest.mark.django_db

CREATE = {
    "name": "Production",
    "description": "prod traffic",
    "limit_usd": 2.5,
    "reset_interval": "monthly",
    "allowed_models": ["gpt-4o", "anthropic/claude-sonnet-4"],
    "allowed_providers": ["openai", "anthropic"],
    "enforce_zdr_openai": True,
    "content_filters": [{"action": "redact", "label": "[K]", "pattern": "sk-[a-z]+"}],
}


@pytest.fixture
def admin(tenant):
    _, secret = tenant.key("management")
    return tenant.client(secret)


def _create(admin, **changes):
    response = admin.post("/api/v1/guardrails", {**CREATE, **changes}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["data"]


def test_crud_in_openrouters_shape(tenant, admin):
    made = _create(admin)
    assert made["limit_usd"] == 2.5 and made["reset_interval"] == "monthly"
    assert made["allowed_providers"] == ["openai", "anthropic"]
    assert made["enforce_zdr_openai"] is True and made["enforce_zdr_google"] is None
    assert made["content_filters"] == CREATE["content_filters"]
    assert made["workspace_id"] == tenant.org.slug and made["updated_at"] is None
    assert made["include_byok_in_budgets"] is False
    gid = made["id"]

    listed = admin.get("/api/v1/guardrails").json()
    assert listed["total_count"] == 1 and listed["data"][0]["id"] == gid
    assert admin.get(f"/api/v1/guardrails/{gid}").json()["data"] == made

    response = admin.patch(
        f"/api/v1/guardrails/{gid}",
        {"limit_usd": 7, "allowed_providers": ["openai"], "description": None},
        format="json",
    )
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["limit_usd"] == 7 and data["allowed_providers"] == ["openai"]
    assert data["description"] is None and data["updated_at"] is not None
    assert data["name"] == "Production"

    assert admin.delete(f"/api/v1/guardrails/{gid}").json() == {"deleted": True}
    assert admin.get(f"/api/v1/guardrails/{gid}").status_code == 404
    actions = set(
        AuditEvent.objects.filter(organization=tenant.org).values_list("action", flat=True)
    )
    assert {"guardrail.created", "guardrail.updated", "guardrail.deleted"} <= actions


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "x" * 201},
        {"name": "x", "limit_usd": -1},
        {"name": "x", "limit_usd": "ten"},
        {"name": "x", "reset_interval": "hourly"},
        {"name": "x", "allowed_models": []},
        {"name": "x", "allowed_models": "gpt-4o"},
        {"name": "x", "include_byok_in_budgets": "yes"},
        {"name": "x", "enforce_zdr": "maybe"},
        {"name": "x", "unknown_field": 1},
        ["name"],
    ],
)
def test_bad_input_writes_nothing(tenant, admin, body):
    response = admin.post("/api/v1/guardrails", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == 400
    assert not Guardrail.objects.exists()


def test_bad_update_and_assignments_write_nothing(tenant, admin):
    gid = _create(admin)["id"]
    key, _ = tenant.key("usage")
    before = admin.get(f"/api/v1/guardrails/{gid}").json()
    for body in ({}, {"name": None}, {"limit_usd": -5}, {"reset_interval": "yearly"}):
        assert admin.patch(f"/api/v1/guardrails/{gid}", body, format="json").status_code == 400
    assert admin.get(f"/api/v1/guardrails/{gid}").json() == before
    base = f"/api/v1/guardrails/{gid}/assignments"
    for body in ({}, {"key_hashes": []}, {"key_hashes": [key.hash, "nope"]}, {"key_hashes": "x"}):
        assert admin.post(f"{base}/keys", body, format="json").status_code == 400
    for body in ({"member_user_ids": []}, {"member_user_ids": ["999999"]}, {"x": 1}):
        assert admin.post(f"{base}/members", body, format="json").status_code == 400
    assert not GuardrailKeyAssignment.objects.exists()
    assert not GuardrailMemberAssignment.objects.exists()
    assert not Budget.objects.filter(guardrail__isnull=False).exists()
    assert admin.get("/api/v1/guardrails/00000000-0000-4000-8000-000000000000").status_code == 404


def test_assignments_make_budgets_and_replace(tenant, admin):
    first = _create(admin)["id"]
    second = _create(admin, name="Second", limit_usd=1, reset_interval=None)["id"]
    key, _ = tenant.key("usage")
    member = tenant.member(Role.MEMBER)

    url = f"/api/v1/guardrails/{first}/assignments"
    assert admin.post(f"{url}/keys", {"key_hashes": [key.hash]}, format="json").json() == {
        "assigned_count": 1
    }
    # again: already under it
    assert admin.post(f"{url}/keys", {"key_hashes": [key.hash]}, format="json").json() == {
        "assigned_count": 0
    }
    body = {"member_user_ids": [str(member.pk)]}
    assert admin.post(f"{url}/members", body, format="json").json() == {"assigned_count": 1}
    budgets = Budget.objects.filter(guardrail__public_id=first)
    assert {(b.scope, b.period, b.limit) for b in budgets} == {
        ("api_key", "monthly", Decimal("2.5")),
        ("member", "monthly", Decimal("2.5")),
    }
    assert all(b.in_utc and not b.utc_windows for b in budgets)

    listed = admin.get(f"{url}/keys").json()
    assert listed["total_count"] == 1
    row = listed["data"][0]
    assert row["key_hash"] == key.hash and row["guardrail_id"] == first
    assert row["key_name"] == key.name and row["key_label"] == key.label
    members = admin.get(f"{url}/members").json()["data"]
    assert [(m["user_id"], m["organization_id"]) for m in members] == [
        (str(member.pk), tenant.org.slug)
    ]
    assert admin.get("/api/v1/guardrails/assignments/keys").json()["total_count"] == 1
    assert admin.get("/api/v1/guardrails/assignments/members").json()["total_count"] == 1

    # a key holds one guardrail: assigning to the second moves it (and its budget)
    url2 = f"/api/v1/guardrails/{second}/assignments"
    assert admin.post(f"{url2}/keys", {"key_hashes": [key.hash]}, format="json").json() == {
        "assigned_count": 1
    }
    assert admin.get(f"{url}/keys").json()["total_count"] == 0
    key_budgets = Budget.objects.filter(api_key=key)
    assert [(b.guardrail.public_id.hex, b.period, b.limit) for b in key_budgets] == [
        (second.replace("-", ""), "lifetime", Decimal(1))
    ]

    # limit changes reach the budgets; a null limit deletes them, a new one recreates them
    admin.patch(f"/api/v1/guardrails/{first}", {"limit_usd": 4, "reset_interval": "daily"},
                format="json")  # fmt: skip
    budget = Budget.objects.get(member=member)
    assert (budget.limit, budget.period) == (Decimal(4), "daily")
    admin.patch(f"/api/v1/guardrails/{first}", {"limit_usd": None}, format="json")
    assert not Budget.objects.filter(member=member).exists()
    admin.patch(f"/api/v1/guardrails/{first}", {"limit_usd": 3}, format="json")
    assert Budget.objects.get(member=member).limit == 3

    # unassign: counts what was on it, and drops the budgets
    response = admin.post(f"{url}/members/remove", body, format="json")
    assert response.json() == {"unassigned_count": 1}
    assert admin.post(f"{url}/members/remove", body, format="json").json() == {
        "unassigned_count": 0
    }
    assert not Budget.objects.filter(member=member).exists()
    assert admin.post(f"{url2}/keys/remove", {"key_hashes": [key.hash]}, format="json").json() == {
        "unassigned_count": 1
    }
    assert not Budget.objects.filter(api_key=key).exists()
    actions = set(
        AuditEvent.objects.filter(organization=tenant.org).values_list("action", flat=True)
    )
    assert {
        "guardrail.keys_assigned",
        "guardrail.keys_unassigned",
        "guardrail.members_assigned",
        "guardrail.members_unassigned",
        "budget.created",
        "budget.deleted",
    } <= actions


def test_delete_drops_assignments_and_budgets(tenant, admin):
    gid = _create(admin)["id"]
    key, _ = tenant.key("usage")
    admin.post(f"/api/v1/guardrails/{gid}/assignments/keys", {"key_hashes": [key.hash]},
               format="json")  # fmt: skip
    assert Budget.objects.filter(api_key=key).exists()
    admin.delete(f"/api/v1/guardrails/{gid}")
    assert not Budget.objects.filter(api_key=key).exists()
    assert not GuardrailKeyAssignment.objects.exists()


def test_limit_enforced_through_the_budget(tenant, admin, prices):
    gid = _create(admin, limit_usd=1, allowed_models=None)["id"]
    tenant.grant("100")
    key, secret = tenant.key("usage")
    admin.post(f"/api/v1/guardrails/{gid}/assignments/keys", {"key_hashes": [key.hash]},
               format="json")  # fmt: skip
    client = tenant.client(secret)
    event = {"id": "e1", "model": "gpt-4o", "cost": "0.8"}
    assert client.post("/api/v1/credits/usage", event, format="json").status_code == 201
    response = client.post("/api/v1/credits/usage", {**event, "id": "e2"}, format="json")
    assert response.status_code == 402, response.content
    error = response.json()["error"]
    assert error["metadata"]["type"] == "budget_exceeded"
    assert error["metadata"]["budget"]["scope"] == "api_key"

    # GET /key lists the guardrail's budget with its guardrail_id, windows in UTC
    data = client.get("/api/v1/key").json()["data"]
    item = next(b for b in data["budgets"] if b["guardrail_id"] == gid)
    assert item["scope"] == "api_key" and item["limit_usd"] == 1
    assert item["spend_usd"] == 0.8 and item["reset_interval"] == "monthly"
    assert item["resets_at"].endswith(("Z", "+00:00"))


def test_member_limit_applies_to_their_keys(tenant, admin, prices):
    gid = _create(admin, limit_usd=0.5, allowed_models=None)["id"]
    tenant.grant("100")
    tenant.allocate("10")
    member = tenant.member(Role.MEMBER, team=tenant.team)
    _, secret = tenant.key("usage", user=member)
    admin.post(f"/api/v1/guardrails/{gid}/assignments/members",
               {"member_user_ids": [str(member.pk)]}, format="json")  # fmt: skip
    client = tenant.client(secret)
    response = client.post(
        "/api/v1/credits/authorizations", {"id": "h1", "amount": "0.6"}, format="json"
    )
    assert response.status_code == 402, response.content  # allowed_models null: any model
    assert response.json()["error"]["metadata"]["type"] == "budget_exceeded"
    ok = client.post("/api/v1/credits/authorizations", {"id": "h2", "amount": "0.4"}, format="json")
    assert ok.status_code == 201, ok.content


def test_allowed_models_enforced_at_authorization(tenant, admin, prices):
    gid = _create(admin, limit_usd=None)["id"]
    tenant.grant("100")
    key, secret = tenant.key("usage")
    other_key, other_secret = tenant.key("usage")
    admin.post(f"/api/v1/guardrails/{gid}/assignments/keys", {"key_hashes": [key.hash]},
               format="json")  # fmt: skip
    client = tenant.client(secret)
    hold = {"id": "h1", "model": "gpt-4o", "prompt_tokens": 10, "max_tokens": 10}
    assert client.post("/api/v1/credits/authorizations", hold, format="json").status_code == 201
    bad = {**hold, "id": "h2", "model": "gpt-4o-mini"}
    response = client.post("/api/v1/credits/authorizations", bad, format="json")
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert error["code"] == 403 and "gpt-4o-mini" in error["message"]
    assert error["metadata"]["type"] == "forbidden"
    assert error["metadata"]["model"] == "gpt-4o-mini"
    assert error["metadata"]["guardrail_id"] == gid
    no_model = client.post("/api/v1/credits/authorizations", {"id": "h3", "amount": "0.1"},
                           format="json")  # fmt: skip
    assert no_model.status_code == 403
    # a key under no guardrail is not restricted
    other = tenant.client(other_secret)
    assert other.post("/api/v1/credits/authorizations", bad, format="json").status_code == 201


def test_team_bound_key_assigns_only_its_teams_keys(tenant, admin):
    gid = _create(admin)["id"]
    _, team_secret = tenant.key("management", team=tenant.team)
    team_usage, _ = tenant.key("usage", team=tenant.team)
    outside, _ = tenant.key("usage")
    member = tenant.member(Role.MEMBER)
    client = tenant.client(team_secret)
    url = f"/api/v1/guardrails/{gid}/assignments"
    assert client.get("/api/v1/guardrails").status_code == 200
    assert client.post(f"{url}/keys", {"key_hashes": [outside.hash]}, format="json").status_code \
        == 400  # fmt: skip
    response = client.post(f"{url}/keys", {"key_hashes": [team_usage.hash]}, format="json")
    assert response.json() == {"assigned_count": 1}
    admin.post(f"{url}/keys", {"key_hashes": [outside.hash]}, format="json")
    assert [r["key_hash"] for r in client.get(f"{url}/keys").json()["data"]] == [team_usage.hash]
    body = {"member_user_ids": [str(member.pk)]}
    assert client.post(f"{url}/members", body, format="json").status_code == 403
    assert client.post("/api/v1/guardrails", CREATE, format="json").status_code == 403
    assert client.patch(f"/api/v1/guardrails/{gid}", {"name": "x"}, format="json").status_code \
        == 403  # fmt: skip
    assert client.delete(f"/api/v1/guardrails/{gid}").status_code == 403


def test_read_only_key_cannot_write(tenant, admin):
    gid = _create(admin)["id"]
    _, secret = tenant.key("management", scopes=["keys:read"])
    client = tenant.client(secret)
    assert client.get(f"/api/v1/guardrails/{gid}").status_code == 200
    assert client.post("/api/v1/guardrails", CREATE, format="json").status_code == 403
    assert client.delete(f"/api/v1/guardrails/{gid}").status_code == 403
    _, none = tenant.key("management", scopes=["credits:read"])
    assert tenant.client(none).get("/api/v1/guardrails").status_code == 403


def test_other_organization_sees_nothing(tenant, other_tenant, admin):
    gid = _create(admin)["id"]
    _, secret = other_tenant.key("management")
    b = other_tenant.client(secret)
    assert b.get("/api/v1/guardrails").json() == {"data": [], "total_count": 0}
    assert b.get(f"/api/v1/guardrails/{gid}").status_code == 404
    key, _ = tenant.key("usage")
    own = b.post("/api/v1/guardrails", CREATE, format="json").json()["data"]["id"]
    response = b.post(f"/api/v1/guardrails/{own}/assignments/keys", {"key_hashes": [key.hash]},
                      format="json")  # fmt: skip
    assert response.status_code == 400
    response = b.post(f"/api/v1/guardrails/{own}/assignments/members",
                      {"member_user_ids": [str(tenant.owner.pk)]}, format="json")  # fmt: skip
    assert response.status_code == 400


def test_a_guardrails_budget_is_changed_through_its_guardrail_only(tenant, admin):
    gid = _create(admin)["id"]
    key, _ = tenant.key("usage")
    admin.post(f"/api/v1/guardrails/{gid}/assignments/keys", {"key_hashes": [key.hash]},
               format="json")  # fmt: skip
    budget = Budget.objects.get(guardrail__public_id=gid)
    listed = admin.get(f"/api/v1/budgets/{budget.public_id}")
    assert listed.status_code == 200 and listed.json()["window_start"].endswith("+00:00")
    for response in (
        admin.patch(f"/api/v1/budgets/{budget.public_id}", {"limit": "9"}, format="json"),
        admin.delete(f"/api/v1/budgets/{budget.public_id}"),
    ):
        assert response.status_code == 409, response.content
        assert response.json()["error"]["metadata"]["guardrail_id"] == gid
    assert Budget.objects.get(pk=budget.pk).limit == Decimal("2.5")
