"""Property-based tests of the whole REST API from its OpenAPI schema (Schemathesis 4).

The schema is loaded from `/api/v1/schema/` of the real WSGI application (portal.wsgi), so every
operation, including those added later, is generated and called in-process with the management
key of a funded organization (credits, prices, a team, members, keys, usage, a hold). Each
response must not be a 5xx, must conform to its documented schema and content type, and must have
a documented status code (ST101-ST105: all four checks pass, so `status_code_conformance`
is on). About half the generated cases get real values (the team's slug, a member's, an
invitation's, a hold's and an account's ids, a key's hash, a priced model): without them nearly
every request to an object would be a 404 and no usage would be priced.

Examples are bounded (20 per operation, derandomized: the same cases every run, besides the
coverage phase's boundary and negative cases); the whole file takes about 25 s.

The WSGI app runs in the test's thread and so on the test's database connection inside the
test's transaction (pytest-django `db`): it sees the fixture's rows and its own writes are rolled
back at the end. Django's `close_old_connections` (request_started/finished) would close that
connection in mid-transaction, so it is disconnected while the test runs, as Django's own test
client does.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import hypothesis
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import Membership
from accounts.roles import Role, TeamRole
from accounts.services import invitation_create, team_member_set
from credits.models import LedgerAccount
from credits.services.guardrails import guardrail_create
from portal.wsgi import application

from .conftest import SYSTEM

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    content_type_conformance,
    status_code_conformance,
]


@contextmanager
def in_process():
    """Keep the test's connection open across the app's requests (see the module docstring)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@dataclass(frozen=True)
class Org:
    """The funded organization as the API sees it: the management key's headers, and real
    values for path parameters and body fields (so that generated requests also reach existing
    objects and priced models, not only 404s and unknown models)."""

    headers: dict[str, str]
    path: dict[str, dict[str, object]]  # schema path -> {parameter: value}
    body: dict[str, object]  # field -> value

    def realistic(self, case) -> None:
        """Put real values into a generated case (in place)."""
        for name, value in self.path.get(case.operation.path.removeprefix("/api/v1"), {}).items():
            if name in case.path_parameters:
                case.path_parameters[name] = value
        if isinstance(case.body, dict):
            for name, value in self.body.items():
                if name in case.body:
                    case.body[name] = value


@pytest.fixture
def providers(settings):
    """The payment providers configured, on loopback servers speaking their contracts (purchases
    answer 201, not 503; webhooks verify signatures)."""
    from .billing.conftest import (
        COINBASE_KEY,
        COINBASE_WEBHOOK_SECRET,
        STRIPE_KEY,
        STRIPE_WEBHOOK_SECRET,
        Coinbase,
        Stripe,
    )

    stripe, coinbase = Stripe(), Coinbase()
    settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE = STRIPE_KEY, stripe.base
    settings.STRIPE_WEBHOOK_SECRET = STRIPE_WEBHOOK_SECRET
    settings.COINBASE_COMMERCE_API_KEY = COINBASE_KEY
    settings.COINBASE_COMMERCE_API_BASE = coinbase.base
    settings.COINBASE_COMMERCE_WEBHOOK_SECRET = COINBASE_WEBHOOK_SECRET
    yield
    stripe.close()
    coinbase.close()


@pytest.fixture
def funded_org(tenant, prices, providers) -> Org:
    """An organization with credits, a team with an allocation and a manager, an invitation,
    usage and management keys, usage events and a pending hold, a pending order; a management
    key (every scope) to call with."""
    from billing.services.orders import order_create

    tenant.grant("1000")
    tenant.allocate("100")
    member = tenant.member(Role.MEMBER, email="member@acme.test")
    team_member_set(team=tenant.team, user=member, role=TeamRole.MANAGER, actor=SYSTEM)
    invitation, _ = invitation_create(
        organization=tenant.org, email="invitee@acme.test", actor=SYSTEM
    )
    usage_key, usage_secret = tenant.key("usage", team=tenant.team)
    usage = tenant.client(usage_secret)
    for i in range(3):
        response = usage.post(
            "/api/v1/credits/usage",
            {
                "id": f"event-{i}",
                "model": "gpt-4o",
                "prompt_tokens": 100 * (i + 1),
                "completion_tokens": 10,
            },
            format="json",
        )
        assert response.status_code == 201, response.content
    response = usage.post(
        "/api/v1/credits/authorizations", {"id": "hold-1", "amount": "1"}, format="json"
    )
    assert response.status_code == 201, response.content
    hold = response.json()["id"]
    guardrail = str(
        guardrail_create(organization=tenant.org, fields={"name": "G"}, actor=SYSTEM).public_id
    )
    order, _ = order_create(organization=tenant.org, amount="10", provider="manual", actor=SYSTEM)
    _, secret = tenant.key("management")
    team_account = LedgerAccount.objects.get(team=tenant.team)
    membership = Membership.objects.get(organization=tenant.org, user=member)
    return Org(
        headers={"Authorization": f"Bearer {secret}"},
        path={
            "/teams/{slug}": {"slug": tenant.team.slug},
            "/teams/{slug}/members": {"slug": tenant.team.slug},
            "/members/{id}": {"id": membership.pk},
            "/invitations/{id}": {"id": invitation.pk},
            "/keys/{hash}": {"hash": usage_key.hash},
            "/credits/accounts/{id}/entries": {"id": team_account.pk},
            "/credits/authorizations/{id}/capture": {"id": hold},
            "/credits/authorizations/{id}/void": {"id": hold},
            "/billing/orders/{id}": {"id": str(order.public_id)},
            **{
                f"/guardrails/{{id}}{tail}": {"id": guardrail}
                for tail in (
                    "",
                    "/assignments/keys",
                    "/assignments/keys/remove",
                    "/assignments/members",
                    "/assignments/members/remove",
                )
            },
        },
        body={
            "model": "gpt-4o",
            "team": tenant.team.slug,
            "email": member.email,
            "key_hashes": [usage_key.hash],
            "member_user_ids": [str(member.pk)],
        },
    )


# Loaded at collection from the real WSGI app (no database needed: the schema view is static).
# `schemathesis.pytest.from_fixture` would load it inside the test, but its lazy runner does not
# work with pytest 9.2 (it sets `Function._nodeid`, which pytest 9.2 no longer has).
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", application)


@schema.parametrize()
@schema.given(realistic=st.booleans())
@hypothesis.settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, realistic, funded_org):
    if realistic:
        funded_org.realistic(case)
    with in_process():
        case.call_and_validate(headers=funded_org.headers, checks=CHECKS)
