"""Each role's forbidden actions are refused with 403 in the error format, and its allowed ones
are not. A management key bound to a member gets the intersection of its scopes with the
member's role (accounts/roles.py, accounts.selectors.key_scopes), so the key acts as the role.

Two layers:
- representative requests per scope, with valid bodies: allowed -> the success status,
  forbidden -> 403 (and nothing written);
- a sweep over every API route and method of the URL conf, derived from each view's
  `scope_map` (so routes added later are covered): 403 exactly when the role lacks the scope,
  else the exact status of a placeholder request (404 unknown object, 400 empty body, 200 read).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

from accounts.models import ApiKey, AuditEvent, Organization, Team
from accounts.roles import ROLE_SCOPES, Role
from credits.models import LedgerTransaction, UsageEvent

from .test_tenant_isolation import url_routes

ROLES = [Role.OWNER, Role.ADMIN, Role.BILLING, Role.MEMBER, Role.VIEWER]


@dataclass(frozen=True)
class Action:
    scope: str
    method: str
    path: str
    body: dict | None
    ok: int  # the status when allowed
    rows: type | None = None  # model whose row count must not grow when refused


ACTIONS = [
    Action("org:read", "GET", "/api/v1/organization", None, 200),
    Action("org:write", "PATCH", "/api/v1/organization", {"name": "Renamed"}, 200),
    Action("members:read", "GET", "/api/v1/members", None, 200),
    Action("members:read", "GET", "/api/v1/teams/research", None, 200),
    Action("members:write", "POST", "/api/v1/teams", {"slug": "made", "name": "Made"}, 201, Team),
    Action(
        "members:write", "POST", "/api/v1/invitations", {"email": "new@acme.test"}, 201, AuditEvent
    ),
    Action("keys:read", "GET", "/api/v1/keys", None, 200),
    Action("keys:write", "POST", "/api/v1/keys", {"name": "made", "kind": "usage"}, 201, ApiKey),
    Action("credits:read", "GET", "/api/v1/credits/balance", None, 200),
    Action("credits:read", "GET", "/api/v1/credits/lots", None, 200),
    Action(
        "credits:write",
        "POST",
        "/api/v1/credits/allocations",
        {"team": "research", "amount": "1"},
        201,
        LedgerTransaction,
    ),
    Action("usage:read", "GET", "/api/v1/credits/usage", None, 200),
    Action("usage:read", "GET", "/api/v1/credits/report", None, 200),
    Action(
        "usage:write",
        "POST",
        "/api/v1/credits/usage",
        {"id": "role-event", "model": "gpt-4o", "prompt_tokens": 10},
        201,
        UsageEvent,
    ),
    Action(
        "usage:write",
        "POST",
        "/api/v1/credits/authorizations",
        {"id": "role-hold", "amount": "0.01"},
        201,
    ),
    Action("audit:read", "GET", "/api/v1/audit-events", None, 200),
]


def assert_forbidden(response) -> None:
    assert response.status_code == 403, response.content
    error = response.json()["error"]
    assert error["code"] == 403
    assert isinstance(error["message"], str) and error["message"]
    assert error["metadata"]["type"] == "forbidden"


def _send(client, method: str, path: str, body: dict | None):
    return client.generic(
        method, path, json.dumps(body) if body is not None else "", content_type="application/json"
    )


@pytest.fixture
def role_client(tenant, prices):
    tenant.grant("50")
    tenant.allocate("20")  # a `member` is on the team: their usage is charged to it

    def make(role: str):
        member = tenant.owner if role == Role.OWNER else tenant.member(role, team=tenant.team)
        _, secret = tenant.key("management", user=member)
        return tenant.client(secret)

    return make


@pytest.mark.parametrize("role", ROLES)
def test_representative_action_per_scope(role, role_client, tenant):
    client = role_client(role)
    scopes = ROLE_SCOPES[role]
    failures = []
    for action in ACTIONS:
        count = action.rows.objects.count() if action.rows else None
        response = _send(client, action.method, action.path, action.body)
        where = f"{role}: {action.method} {action.path} ({action.scope})"
        if action.scope in scopes:
            if response.status_code != action.ok:
                failures.append(
                    f"{where}: allowed, got {response.status_code} {response.content[:200]!r}"
                )
            continue
        try:
            assert_forbidden(response)
        except (AssertionError, KeyError, ValueError):
            failures.append(
                f"{where}: forbidden, got {response.status_code} {response.content[:200]!r}"
            )
            continue
        if count is not None and action.rows.objects.count() != count:
            failures.append(f"{where}: refused, but wrote {action.rows.__name__} rows")
    assert not failures, "\n".join(failures)
    assert Organization.objects.get(pk=tenant.org.pk).name == (
        "Renamed" if "org:write" in scopes else "Acme"
    )


def _api_operations() -> list[tuple[str, str, str]]:
    """(route, method, scope) of every API route of the URL conf with a `scope_map`."""
    out = []
    for url in url_routes():
        cls = url.view_class
        scope_map = getattr(cls, "scope_map", None) if cls else None
        if not scope_map:
            continue
        for method in sorted(url.api_methods):
            out.append((url.route, method, scope_map.get(method)))
    return out


def _fill(route: str) -> str:
    """A path with placeholder parameters (no such object: a granted request answers 404)."""
    return "/" + re.sub(
        r"<(?:(\w+):)?\w+>",
        lambda m: {"int": "987654321", "uuid": "00000000-0000-4000-8000-000000000000"}.get(
            m.group(1), "no-such-thing"
        ),
        route,
    )


def test_every_api_method_names_a_scope():
    operations = _api_operations()
    assert len(operations) >= 25
    missing = [f"{m} {r}" for r, m, scope in operations if scope is None]
    assert not missing, f"methods without a scope in scope_map (always refused): {missing}"


# Views open to any valid key, whatever its scopes:
ANY_KEY = {("api/v1/key", "GET")}

# What a request with placeholders and an empty body answers when the scope is granted
# (`allowed_status`): 404 for an object that does not exist, 400 for an empty body, 200 for a
# list or read without parameters. The exceptions:
ALLOWED_STATUS = {
    ("api/v1/generation", "GET"): 400,  # `id` is required
    ("api/v1/organization", "PATCH"): 200,  # every field is optional: an empty change
    # the input is checked before credits:write (allocating) or the manager's right (reclaiming)
    ("api/v1/credits/allocations", "POST"): 400,
    ("api/v1/notifications/read-all", "POST"): 200,  # takes no body
    ("api/v1/notification-preferences", "PUT"): 200,  # every field is optional: no change
    # the organization's OpenRouter connection, not set here: 404 (PUT with no key: 400)
    ("api/v1/billing/openrouter", "GET"): 404,
    ("api/v1/billing/openrouter", "DELETE"): 404,
    ("api/v1/billing/openrouter/sync", "POST"): 404,
    # a streamed export's format is input: an unknown one is a 400 naming the formats
    ("api/v1/billing/exports/usage.<str:fmt>", "GET"): 400,
    ("api/v1/billing/exports/ledger.<str:fmt>", "GET"): 400,
    # an empty body starts saving a card at Stripe, which is not configured here
    ("api/v1/billing/topup/payment-method", "POST"): 503,
}


def allowed_status(route: str, method: str) -> int:
    if (route, method) in ALLOWED_STATUS:
        return ALLOWED_STATUS[(route, method)]
    if "<" in route:
        return 404
    return 200 if method == "GET" else 400


@pytest.mark.parametrize("role", ROLES)
def test_scope_sweep_over_every_api_route(role, role_client):
    """For every API method of the URL conf: 403 in the error format when the role lacks the
    scope, and exactly the status a placeholder request must get (`allowed_status`) when it has
    it. Bodies are empty: the scope is checked before the input."""
    client = role_client(role)
    scopes = ROLE_SCOPES[role]
    failures = []
    for route, method, scope in _api_operations():
        response = _send(client, method, _fill(route), {})
        where = f"{role}: {method} /{route} (needs {scope})"
        if (route, method) in ANY_KEY or scope in scopes:
            expected = allowed_status(route, method)
            if response.status_code != expected:
                failures.append(
                    f"{where}: has the scope, got {response.status_code}, expected {expected} "
                    f"{response.content[:200]!r}"
                )
        else:
            try:
                assert_forbidden(response)
            except (AssertionError, KeyError, ValueError):
                failures.append(f"{where}: lacks the scope, got {response.status_code}")
    assert not failures, "\n".join(failures)


def test_a_key_never_exceeds_its_members_role(tenant):
    """A key created with every scope, for a viewer, still acts as a viewer."""
    viewer = tenant.member(Role.VIEWER)
    _, secret = tenant.key("management", user=viewer, scopes=sorted(ROLE_SCOPES[Role.OWNER]))
    client = tenant.client(secret)
    assert_forbidden(_send(client, "PATCH", "/api/v1/organization", {"name": "X"}))
    assert_forbidden(_send(client, "POST", "/api/v1/keys", {"name": "k"}))
    assert client.get("/api/v1/organization").status_code == 200
    assert Organization.objects.get(pk=tenant.org.pk).name == "Acme"


def test_a_key_narrower_than_its_member_is_held_to_its_own_scopes(tenant):
    _, secret = tenant.key("management", user=tenant.owner, scopes=["org:read"])
    client = tenant.client(secret)
    assert client.get("/api/v1/organization").status_code == 200
    assert_forbidden(client.get("/api/v1/members"))
    assert_forbidden(_send(client, "POST", "/api/v1/teams", {"slug": "x", "name": "X"}))
    assert not Team.objects.filter(organization=tenant.org, slug="x").exists()


def test_a_usage_key_cannot_manage(tenant):
    _, secret = tenant.key("usage", team=tenant.team)
    client = tenant.client(secret)
    for method, path, body in [
        ("GET", "/api/v1/members", None),
        ("POST", "/api/v1/keys", {"name": "k"}),
        ("PATCH", "/api/v1/organization", {"name": "X"}),
        ("GET", "/api/v1/audit-events", None),
        ("GET", "/api/v1/credits", None),
    ]:
        assert_forbidden(_send(client, method, path, body))
