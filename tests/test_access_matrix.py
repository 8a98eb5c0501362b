"""The access matrix: every route of one organization, for every role and key binding.

The intra-organization twin of `test_tenant_isolation` (issue 7): one organization with a member
of each role, a team manager, two allocation-funded teams (alpha, beta) with usage and pending
holds, and a key of each binding. MATRIX states, per route and method, the status each principal
of PRINCIPALS must get, in that order; per-probe fillers aim at objects of team beta and of other
members, so that the binding rules show (404 for rows a principal may not see, 403 for what it
sees but may not do).

Every cell is sent in a savepoint that is rolled back afterwards, so each starts from the same
organization. Every cell must: answer its status (403/404 of the API in the error format), write
nothing when refused, and show nothing the principal may not read (other members' e-mails, keys
it cannot list, usage and holds of others; what the principal sent itself is not counted). Some
probes check the rows listed as well.

A route of the URL conf (the API and the pages under `o/<org>/`) or an operation of the OpenAPI
schema missing from MATRIX fails `test_every_route_is_in_the_matrix` by name.

The pages link only to what their reader may open: every link and htmx fetch of every page a
session opens (by MATRIX) must answer that session 200 (`test_every_link_of_every_page_...`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.apps import apps
from django.db import connection, transaction
from rest_framework.test import APIClient

from accounts.access import Principal
from accounts.models import ApiKey, Invitation, Membership, Organization, Team, User
from accounts.roles import Role, TeamRole
from accounts.services import apikey_create, invitation_create, team_create, team_member_set
from billing.exports import ExportFilters
from billing.models import CreditNote, ExportJob, Invoice, Order, Statement, TopUp
from billing.services.documents import Line, billing_profile_of, credit_note_issue, invoice_issue
from billing.services.exports import export_job_create, export_job_run
from billing.services.orders import order_create
from billing.services.statements import previous_month, statement_generate
from billing.services.sync import openrouter_connection_set
from billing.services.topup import RuleInput, topup_rule_set, topup_start
from credits.models import Alert, Budget, Guardrail, Hold, LedgerAccount, Upstream, UsageEvent
from credits.services.budgets import budget_create
from credits.services.guardrails import (
    guardrail_assign_keys,
    guardrail_assign_members,
    guardrail_create,
)
from credits.services.upstreams import upstream_create
from notifications.models import Notification, OutboxMessage, WebhookEndpoint
from notifications.services import notify, webhook_endpoint_create

from .conftest import SYSTEM, Tenant
from .test_tenant_isolation import (
    EXEMPT,
    EXEMPT_PREFIXES,
    PROJECT_APPS,
    _org_lookup,
    _url,
    schema_operations,
    shape,
    url_routes,
)

# The principals, in the order of every row of MATRIX ----------------------------------------------

SESSIONS = ("owner", "admin", "billing", "member", "viewer", "manager")
KEYS = ("org_key", "alpha_key", "alpha_mgmt", "member_key")
PRINCIPALS = SESSIONS + KEYS
# owner, admin, billing, member, viewer: a member of each role's browser session (`member` is on
#   team alpha); manager: role member, manager of team beta (django-guardian permissions);
# org_key: a management key of no team and no member; alpha_key: a usage key bound to team
#   alpha; alpha_mgmt: a management key bound to team alpha; member_key: a usage key bound to
#   the member.
ORG_WIDE = ("owner", "admin", "billing", "viewer", "org_key")
ALL = "*"

# What each principal may identify or see (anything else must never reach it).
SEES_MEMBERS: dict[str, Any] = {  # e-mails of these users
    **dict.fromkeys(("owner", "admin", "billing", "org_key", "alpha_mgmt"), ALL),
    "member": {"member"},
    "viewer": {"viewer"},
    "manager": {"manager", "worker"},  # themselves and the members of the team they manage
    "alpha_key": set(),
    "member_key": {"member"},
}
SEES_KEYS: dict[str, Any] = {  # names and labels of these keys
    **dict.fromkeys(("owner", "admin", "billing", "org_key"), ALL),
    "member": {"member_key"},
    "viewer": set(),
    "manager": set(),
    "alpha_key": {"alpha_key"},
    "alpha_mgmt": {"alpha_key", "alpha_mgmt"},
    "member_key": {"member_key"},
}
SEES_USAGE: dict[str, Any] = {  # usage events and holds made by these
    **dict.fromkeys(ORG_WIDE, ALL),
    "member": {"member", "member_session"},
    "manager": {"beta"},
    # the member is on team alpha: their usage is charged to alpha, and alpha's keys see it
    "alpha_key": {"alpha", "member", "member_session"},
    "alpha_mgmt": {"alpha", "member", "member_session"},
    "member_key": {"member", "member_session"},
}
SEES_TEAMS: dict[str, set[str]] = {
    **dict.fromkeys(ORG_WIDE, {"alpha", "beta", "research"}),
    "member": {"alpha"},
    "manager": {"beta"},
    "alpha_key": {"alpha"},
    "alpha_mgmt": {"alpha"},
    "member_key": {"alpha"},
}
USAGE_MAKERS = ("alpha", "beta", "member", "member_session")


def _seen(table: dict[str, Any], principal: str, universe) -> set[str]:
    return set(universe) if table[principal] == ALL else set(table[principal])


# The organization ---------------------------------------------------------------------------------


@dataclass
class World:
    t: Tenant
    users: dict[str, User]
    teams: dict[str, Team]
    keys: dict[str, ApiKey]
    events: dict[str, UsageEvent]
    holds: dict[str, Hold]
    invitation: Invitation
    clients: dict[str, APIClient]
    hidden: dict[str, set[str]] = field(default_factory=dict)  # principal -> markers

    @property
    def org(self):
        return self.t.org

    def membership(self, user: str) -> int:
        return Membership.objects.get(organization=self.org, user=self.users[user]).pk

    def place(self, team: str, user: str) -> int:
        """The id of `user`'s place on `team` (a TeamMembership)."""
        return self.teams[team].memberships.get(user=self.users[user]).pk

    def account(self, team: str | None) -> LedgerAccount:
        if team is None:
            return LedgerAccount.objects.get(organization=self.org, kind=LedgerAccount.Kind.POOL)
        return LedgerAccount.objects.get(
            organization=self.org, kind=LedgerAccount.Kind.TEAM, team=self.teams[team]
        )

    def markers(self, principal: str) -> set[str]:
        """Strings that identify what `principal` may not see."""
        members = _seen(SEES_MEMBERS, principal, self.users)
        keys = _seen(SEES_KEYS, principal, self.keys)
        usage = _seen(SEES_USAGE, principal, USAGE_MAKERS)
        out = {u.email for name, u in self.users.items() if name not in members}
        for name, key in self.keys.items():
            if name not in keys:
                out |= {key.name, key.label, key.hash}
        for name, event in self.events.items():
            if name not in usage:
                out.add(event.event_id)
        for name, hold in self.holds.items():
            if name not in usage:
                out |= {hold.idempotency_key, str(hold.public_id)}
        return out


def _client(*, user: User | None = None, secret: str | None = None, org: str = "") -> APIClient:
    client = APIClient()  # CSRF checks off, as Django's test client
    client.raise_request_exception = False  # a 500 is a status of the matrix like any other
    if user is not None:
        client.force_login(user)
        client.credentials(HTTP_X_ORGANIZATION=org)
    else:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _key(t: Tenant, name: str, kind: str, **kwargs) -> tuple[ApiKey, str]:
    return apikey_create(organization=t.org, name=name, kind=kind, actor=SYSTEM, **kwargs)


def _use(client: APIClient, event_id: str, hold_id: str | None = None) -> None:
    body = {"id": event_id, "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100}
    response = client.post("/api/v1/credits/usage", body, format="json")
    assert response.status_code == 201, response.content
    if hold_id:
        response = client.post(
            "/api/v1/credits/authorizations", {"id": hold_id, "amount": "1"}, format="json"
        )
        assert response.status_code == 201, response.content


def build_world(t: Tenant) -> World:
    slug = t.org.slug
    users = {"owner": t.owner}
    for role in ("admin", "billing", "member", "viewer"):
        users[role] = t.member(role, email=f"{role}-person@{slug}.test")
    users["manager"] = t.member(Role.MEMBER, email=f"beta-manager@{slug}.test")
    users["worker"] = t.member(Role.MEMBER, email=f"beta-worker@{slug}.test")
    teams = {"research": t.team}
    for name in ("alpha", "beta"):
        teams[name] = team_create(organization=t.org, slug=name, name=name.title(), actor=SYSTEM)
    team_member_set(team=teams["alpha"], user=users["member"], actor=SYSTEM)
    team_member_set(team=teams["beta"], user=users["manager"], role=TeamRole.MANAGER, actor=SYSTEM)
    team_member_set(team=teams["beta"], user=users["worker"], actor=SYSTEM)
    t.grant("100")
    t.allocate("20", team=teams["alpha"])
    t.allocate("20", team=teams["beta"])

    made = {
        "org_key": _key(t, "matrix-org-key", "management"),
        "alpha_key": _key(t, "matrix-alpha-usage", "usage", team=teams["alpha"]),
        "alpha_mgmt": _key(t, "matrix-alpha-mgmt", "management", team=teams["alpha"]),
        "member_key": _key(t, "matrix-member-usage", "usage", user=users["member"]),
        "beta_key": _key(t, "matrix-beta-usage", "usage", team=teams["beta"]),
        "owner_key": _key(t, "matrix-owner-key", "management", user=users["owner"]),
    }
    keys = {name: key for name, (key, _) in made.items()}
    clients = {name: _client(user=users[name], org=slug) for name in SESSIONS}
    clients |= {name: _client(secret=made[name][1]) for name in KEYS}
    for _, secret in made.values():  # every key used once: last_used_at is set now
        assert _client(secret=secret).get("/api/v1/key").status_code == 200

    _use(clients["alpha_key"], "ev-alpha-1", "hold-alpha-1")
    _use(_client(secret=made["beta_key"][1]), "ev-beta-1", "hold-beta-1")
    _use(clients["member_key"], "ev-member-1", "hold-member-1")
    _use(clients["member"], "ev-member-session-1")
    invitation, _ = invitation_create(
        organization=t.org, email=f"invitee@{slug}.test", actor=SYSTEM
    )
    events = {
        name: UsageEvent.objects.get(organization=t.org, event_id=f"ev-{name.replace('_', '-')}-1")
        for name in USAGE_MAKERS
    }
    holds = {
        name: Hold.objects.get(organization=t.org, idempotency_key=f"hold-{name}-1")
        for name in ("alpha", "beta", "member")
    }
    # Notifications: an endpoint, and an event that reaches owner, admin and billing in-app
    # (and leaves outbox messages, not sent: no commit in these tests).
    webhook_endpoint_create(
        organization=t.org, url="https://hooks.matrix.test/in", events=["balance.low"],
        actor=SYSTEM,
    )  # fmt: skip
    notify(organization=t.org, type="balance.low", data={"available": "2.5"})
    for scope, target in (
        ("team", {"team": teams["beta"]}),
        ("member", {"member": users["worker"]}),
        ("organization", {}),
    ):
        made_budget = budget_create(organization=t.org, scope=scope, period="monthly",
                                    limit="50", actor=SYSTEM, **target)  # fmt: skip
        Alert.objects.create(organization=t.org, budget=made_budget, threshold=75, spent=40,
                             window_start=made_budget.created_at, limit=made_budget.limit,
                             type=Alert.Type.THRESHOLD_CROSSED)  # fmt: skip
    # A guardrail without a limit (no budgets: `budget_id` finds one per scope) over the alpha,
    # beta and member keys and the worker.
    guardrail = guardrail_create(
        organization=t.org, fields={"name": "matrix-guardrail"}, actor=SYSTEM
    )
    guardrail_assign_keys(
        guardrail=guardrail,
        keys=[keys["alpha_key"], keys["beta_key"], keys["member_key"]],
        actor=SYSTEM,
    )
    guardrail_assign_members(guardrail=guardrail, members=[users["worker"]], actor=SYSTEM)
    # The OpenRouter credit sync: a connection whose key no route shows anyone.
    openrouter_connection_set(organization=t.org, key=OPENROUTER_KEY, actor=SYSTEM)
    # A pending bank-transfer order (billing pages and API).
    order_create(organization=t.org, amount="10", provider="manual", actor=SYSTEM)
    # Billing documents: an invoice with a credit note, and last month's statement.
    build_documents(t)
    # An export job of the owner's session, run (done, with its file): only the owner sees it.
    export_job_run(job_id=export_job_create(
        principal=Principal.for_session(organization=t.org, user=users["owner"]), kind="usage",
        format="csv", filters=ExportFilters(), pseudonymize=False, actor=SYSTEM,
    ).pk)  # fmt: skip
    # Automatic top-up: a saved card, a rule that asks for approval, a top-up awaiting it.
    profile = billing_profile_of(t.org)
    profile.stripe_customer_id, profile.stripe_payment_method_id = "cus_matrix", "pm_matrix"
    profile.save()
    topup_rule_set(organization=t.org, actor=SYSTEM, data=RuleInput(
        enabled=True, threshold="1000", amount="20", monthly_cap="100", requires_approval=True,
    ))  # fmt: skip
    assert topup_start(organization_id=t.org.pk).state == TopUp.State.AWAITING_APPROVAL
    upstream_create(
        organization=t.org, name="matrix-upstream", kind="openai_compatible",
        base_url="https://llm.matrix.test/v1", models=["gpt-4o"], actor=SYSTEM,
    )  # fmt: skip
    world = World(t, users, teams, keys, events, holds, invitation, clients)
    world.hidden = {p: world.markers(p) | {OPENROUTER_KEY[9:]} for p in PRINCIPALS}
    return world


OPENROUTER_KEY = "sk-or-v1-" + "5eC2e7" * 10  # the matrix organization's OpenRouter key


def build_documents(t: Tenant) -> None:
    """An invoice, a credit note against it, and the statement of the month before this one
    (the organization dated back to 2020 so that earlier months may be generated)."""
    Organization.objects.filter(pk=t.org.pk).update(created_at=datetime(2020, 1, 1, tzinfo=UTC))
    t.org.refresh_from_db()
    invoice = invoice_issue(
        organization=t.org,
        lines=[Line(description="AI credits", quantity=Decimal(10), unit_price=Decimal(1))],
        actor=SYSTEM,
    )
    credit_note_issue(invoice=invoice, total=Decimal(2), reason="Refund", actor=SYSTEM)
    year, month = previous_month(t.org)
    statement_generate(organization=t.org, year=year, month=month, actor=SYSTEM)


def snapshot(org) -> dict[str, list]:
    """Every row the organization owns (as the tenant walker's snapshot), without the columns
    that reading changes (`ApiKey.last_used_at`)."""
    out = {}
    for model in apps.get_models():
        if model._meta.app_label not in PROJECT_APPS or _org_lookup(model) is None:
            continue
        rows = model.objects.filter(**{_org_lookup(model): org.pk}).values()
        out[model._meta.label] = sorted(
            json.dumps({k: v for k, v in r.items() if k != "last_used_at"}, default=str)
            for r in rows
        )
    return out


def rows_written() -> int:
    """Rows inserted, updated or deleted so far in this transaction, in any table (PostgreSQL's
    `pg_stat_xact_all_tables`): a cell whose count does not move wrote nothing, and only a cell
    whose count moved needs the full `snapshot` to say whether its organization's rows changed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)"
            " FROM pg_stat_xact_all_tables"
        )
        return int(cursor.fetchone()[0])


# The table ----------------------------------------------------------------------------------------

Fill = Callable[[World], Any]
Check = Callable[[World, str, Any], None]  # (world, principal, response): asserts


@dataclass(frozen=True)
class Probe:
    """One request, sent by every principal. `codes`: the statuses in PRINCIPALS order, space
    separated; `path`, `body`, `query`: fillers; `check`: more assertions on a 2xx answer."""

    codes: str
    path: Fill | None = None
    body: Fill | None = None
    query: Fill | None = None
    check: Check | None = None
    # Who may write (pages answer a refused form with a redirect and a message): everyone else
    # must write nothing, whatever the status. None: whoever is refused (4xx).
    writers: tuple[str, ...] | None = None

    def expected(self) -> dict[str, int]:
        codes = [int(c) for c in self.codes.split()]
        assert len(codes) == len(PRINCIPALS), f"{self.codes!r}: one code per principal"
        return dict(zip(PRINCIPALS, codes, strict=True))


def P(codes: str, **kwargs) -> Probe:  # noqa: N802 - reads as a table
    return Probe(codes, **kwargs)


def _rows(response) -> list[dict]:
    data = response.json()
    return data["results"] if "results" in data else data["data"]


def usage_rows(w: World, p: str, response) -> None:
    listed = {row["id"] for row in _rows(response)}
    seen = _seen(SEES_USAGE, p, USAGE_MAKERS)
    assert listed == {w.events[n].event_id for n in seen}, listed


def key_rows(w: World, p: str, response) -> None:
    listed = {row["name"] for row in _rows(response)}
    seen = _seen(SEES_KEYS, p, w.keys)
    assert listed == {w.keys[n].name for n in seen}, listed


def team_rows(w: World, p: str, response) -> None:
    assert {row["slug"] for row in _rows(response)} == SEES_TEAMS[p]


def account_rows(w: World, p: str, response) -> None:
    listed = {row["id"] for row in _rows(response)}
    if p in ORG_WIDE:
        assert listed == set(
            LedgerAccount.objects.filter(organization=w.org).values_list("pk", flat=True)
        )
    else:
        assert listed == {w.account(team).pk for team in SEES_TEAMS[p]}, listed


def lot_rows(w: World, p: str, response) -> None:
    teams = {row["team"] for row in _rows(response)}
    if p in ORG_WIDE:
        assert None in teams and {"alpha", "beta"} <= teams, teams
    else:
        assert teams == SEES_TEAMS[p], teams


def balance(w: World, p: str, response) -> None:
    body = response.json()
    assert {row["team"] for row in body["teams"]} == SEES_TEAMS[p]
    if p in ORG_WIDE:
        assert body["total_credited"] is not None and body["pool_balance"] is not None
    else:
        assert body["total_credited"] is None and body["total_expired"] is None
        assert body["pool_balance"] is None  # alpha and beta draw on their own accounts


def forecast_accounts(w: World, p: str, response) -> None:
    """The accounts it can draw on: every pool and team account org-wide, else its teams'."""
    listed = {(row["kind"], row["team"]) for row in response.json()["accounts"]}
    if p in ORG_WIDE:
        assert ("pool", None) in listed and {("team", "alpha"), ("team", "beta")} <= listed
    else:
        assert listed == {("team", team) for team in SEES_TEAMS[p]}, listed


def report(w: World, p: str, response) -> None:
    body = response.json()
    seen = _seen(SEES_USAGE, p, USAGE_MAKERS)
    assert body["totals"]["events"] == len(seen), body["totals"]
    members = {row["key"] for row in body["breakdowns"]["member"]}
    emails = {w.users[u].email for u in _seen(SEES_MEMBERS, p, w.users)}
    assert members <= emails | {"(other members)", None}, members
    if p == "viewer":
        assert "(other members)" in members, members
    keys = {row["key"] for row in body["breakdowns"]["key"]}
    names = {w.keys[k].name for k in _seen(SEES_KEYS, p, w.keys)}
    assert keys <= names | {"(other keys)", None}, keys


def generation_of(event: str) -> Check:
    def check(w: World, p: str, response) -> None:
        assert response.json()["data"]["id"] == w.events[event].event_id

    return check


def own_key(w: World, p: str, response) -> None:
    assert response.json()["data"]["hash"] == w.keys[p].hash


def key_made(team: str | None, member: str | None, kind: str = "usage") -> Check:
    """The key created is bound as the principal's terms say (a team key's keys to its team, a
    member's to themselves)."""

    def check(w: World, p: str, response) -> None:
        data = response.json()["data"]
        bound_team = "alpha" if p == "alpha_mgmt" else team
        bound_member = p if p in ("member", "manager") else member
        assert data["team"] == (bound_team and w.teams[bound_team].slug)
        assert data["member"] == (bound_member and w.users[bound_member].email)
        assert data["kind"] == kind

    return check


def role_is(user: str, role: str) -> Check:
    def check(w: World, p: str, response) -> None:
        membership = Membership.objects.get(organization=w.org, user=w.users[user])
        assert membership.role == role

    return check


TEAM = {"alpha": lambda w: {"slug": "alpha"}, "beta": lambda w: {"slug": "beta"}}


def order_id(w: World) -> dict:
    return {"id": str(Order.objects.get(organization=w.org, purpose="purchase").public_id)}


def member_pk(user: str) -> Fill:
    return lambda w: {"pk": w.membership(user)}


def key_hash(key: str) -> Fill:
    return lambda w: {"hash": w.keys[key].hash}


def hold_id(hold: str, by: str = "client") -> Fill:
    def fill(w: World) -> dict:
        h = w.holds[hold]
        return {"id": h.idempotency_key if by == "client" else str(h.public_id)}

    return fill


def budget_id(scope: str) -> Fill:
    return lambda w: {"id": str(Budget.objects.get(organization=w.org, scope=scope).public_id)}


def alert_id(scope: str) -> Fill:
    return lambda w: {
        "id": str(Alert.objects.get(organization=w.org, budget__scope=scope).public_id)
    }


def upstream_id(w: World) -> dict:
    return {"id": str(Upstream.objects.get(organization=w.org).public_id)}


def gateway_models(w: World, p: str, response) -> None:
    """What the organization's upstream serves, whoever asks."""
    assert [m["id"] for m in response.json()["data"]] == ["gpt-4o"], response.content


def guardrail_id(w: World) -> dict:
    return {"id": str(Guardrail.objects.get(organization=w.org).public_id)}


def topup_id(w: World) -> dict:
    return {"id": str(TopUp.objects.get(organization=w.org).order.public_id)}


TOPUP_RULE = {"enabled": False, "threshold": "10", "amount": "20", "monthly_cap": "100"}


def hashes(*names: str) -> Fill:
    return lambda w: {"key_hashes": [w.keys[n].hash for n in names]}


def user_ids(*names: str) -> Fill:
    return lambda w: {"member_user_ids": [str(w.users[n].pk) for n in names]}


def assigned_key_rows(w: World, p: str, response) -> None:
    """Only the assigned keys the principal may list."""
    listed = {row["key_hash"] for row in _rows(response)}
    seen = _seen(SEES_KEYS, p, w.keys) & {"alpha_key", "beta_key", "member_key"}
    assert listed == {w.keys[n].hash for n in seen}, (p, listed)


def assigned_member_rows(w: World, p: str, response) -> None:
    """The worker, to who may read members; else only the caller itself (not assigned)."""
    listed = {row["user_id"] for row in _rows(response)}
    full = p in ("owner", "admin", "billing", "org_key")
    assert listed == ({str(w.users["worker"].pk)} if full else set()), (p, listed)


def account_pk(team: str | None) -> Fill:
    return lambda w: {"pk": w.account(team).pk}


def email(user: str, **extra) -> Fill:
    return lambda w: {"email": w.users[user].email, **extra}


def invoice_number(w: World) -> dict:
    return {"number": Invoice.objects.filter(organization=w.org).order_by("id")[0].number}


def credit_note_number(w: World) -> dict:
    return {"number": CreditNote.objects.filter(organization=w.org).order_by("id")[0].number}


def statement_id(w: World) -> dict:
    return {"id": str(Statement.objects.filter(organization=w.org).order_by("id")[0].public_id)}


# billing:read (owners, admins, billing members, a key of the whole organization) and
# billing:write (owners, billing members, that key).
BILLING_READ = "200 200 200 403 403 403  200 403 403 403"
BILLING_READ_PAGE = "200 200 200 404 404 404  302 302 302 302"


def endpoint_id(w: World) -> dict:
    return {"id": WebhookEndpoint.objects.get(organization=w.org).public_id}


def delivery_id(w: World) -> dict:
    message = OutboxMessage.objects.get(organization=w.org, channel="webhook")
    return {"id": message.endpoint.public_id, "message_id": message.message_id}


def owners_notification(w: World) -> dict:
    return {
        "id": Notification.objects.get(
            organization=w.org, recipient=w.users["owner"], type="balance.low"
        ).public_id
    }


def own_notifications(w: World, p: str, response) -> None:
    """Only the caller's own notifications (a key of no member: none)."""
    listed = {row["id"] for row in _rows(response)}
    user = w.users.get(p) if p in SESSIONS else w.keys[p].user
    mine = Notification.objects.filter(organization=w.org, recipient=user) if user else []
    assert listed == {str(n.public_id) for n in mine}, (p, listed)
    if p in ("owner", "admin", "billing"):
        # balance.low; the owner and billing members are asked to approve the top-up too
        assert listed and {row["type"] for row in _rows(response)} <= {
            "balance.low",
            "topup.approval_required",
        }


def export_id(w: World) -> dict:
    return {"id": ExportJob.objects.get(organization=w.org).public_id}


def exported_usage(w: World, p: str, response) -> None:
    """The usage CSV holds exactly the events the principal sees (asked again: the matrix read
    the first stream)."""
    again = w.clients[p].get("/api/v1/billing/exports/usage.csv")
    content = b"".join(again.streaming_content).decode()
    listed = {row["event_id"] for row in csv.DictReader(io.StringIO(content))}
    seen = _seen(SEES_USAGE, p, USAGE_MAKERS)
    assert listed == {w.events[n].event_id for n in seen}, listed


USAGE_BODY = {"id": "matrix-new-event", "model": "gpt-4o", "prompt_tokens": 10}
SAME_AS_BETA = {"id": "ev-beta-1", "model": "gpt-4o", "prompt_tokens": 1000,
                "completion_tokens": 100}  # fmt: skip
CAPTURE = {"model": "gpt-4o", "prompt_tokens": 10}

# route (as in the URL conf) -> method -> [probes]. Columns, in PRINCIPALS order:
#      owner admin billing member viewer manager | org_key alpha_key alpha_mgmt member_key
# fmt: off
MATRIX: dict[str, dict[str, list[Probe]]] = {
    # The organization
    "api/v1/organization": {
        "GET":   [P("200 200 200 200 200 200  200 403 200 403")],
        "PATCH": [P("200 200 403 403 403 403  200 403 403 403", body=lambda w: {"name": "R"})],
    },
    "api/v1/teams": {
        "GET":  [P("200 200 200 403 403 403  200 403 403 403", check=team_rows)],
        "POST": [P("201 201 403 403 403 403  201 403 403 403",
                   body=lambda w: {"slug": "gamma", "name": "Gamma"})],
    },
    "api/v1/teams/<slug:slug>": {
        "GET":   [P("200 200 200 403 403 403  200 403 403 403", path=TEAM["beta"]),
                  P("200 200 200 403 403 403  200 403 403 403", path=TEAM["alpha"])],
        "PATCH": [P("200 200 403 403 403 403  200 403 403 403", path=TEAM["beta"],
                    body=lambda w: {"name": "Renamed"})],
    },
    # A team's manager manages its members without members:write, but makes no managers; a
    # team-bound key holds no scope over the whole organization (settings, members,
    # invitations, audit, billing: accounts.access.ORGANIZATION_ONLY_SCOPES).
    "api/v1/teams/<slug:slug>/members": {
        "POST": [P("200 200 403 403 403 200  200 403 403 403", path=TEAM["beta"],
                   body=email("member")),
                 P("200 200 403 403 403 403  200 403 403 403", path=TEAM["beta"],
                   body=email("member", role="manager")),
                 P("200 200 403 403 403 403  200 403 403 403", path=TEAM["alpha"],
                   body=email("viewer"))],
    },
    "api/v1/teams/<slug:slug>/members/<int:pk>": {
        "DELETE": [P("204 204 403 403 403 204  204 403 403 403",
                     path=lambda w: {"slug": "beta", "pk": w.membership("worker")})],
    },
    "api/v1/members": {
        "GET": [P("200 200 200 403 403 403  200 403 403 403")],
    },
    # Only an owner touches the owner role; admins manage up to admin; nobody changes their own.
    "api/v1/members/<int:pk>": {
        "GET":    [P("200 200 200 403 403 403  200 403 403 403", path=member_pk("owner"))],
        "PATCH":  [P("403 403 403 403 403 403  403 403 403 403", path=member_pk("owner"),
                     body=lambda w: {"role": "admin"}),
                   P("200 403 403 403 403 403  200 403 403 403", path=member_pk("admin"),
                     body=lambda w: {"role": "viewer"}),
                   P("200 200 403 403 403 403  200 403 403 403", path=member_pk("viewer"),
                     body=lambda w: {"role": "admin"}, check=role_is("viewer", "admin")),
                   P("200 403 403 403 403 403  403 403 403 403", path=member_pk("viewer"),
                     body=lambda w: {"role": "owner"})],
        "DELETE": [P("204 204 403 403 403 403  204 403 403 403", path=member_pk("viewer")),
                   P("409 403 403 403 403 403  403 403 403 403", path=member_pk("owner"))],
    },
    "api/v1/invitations": {
        "GET":  [P("200 200 200 403 403 403  200 403 403 403")],
        "POST": [P("201 201 403 403 403 403  201 403 403 403",
                   body=lambda w: {"email": "new@acme.test"}),
                 P("201 403 403 403 403 403  403 403 403 403",
                   body=lambda w: {"email": "new@acme.test", "role": "owner"}),
                 P("201 201 403 403 403 403  201 403 403 403",
                   body=lambda w: {"email": "new@acme.test", "team": "beta"})],
    },
    "api/v1/invitations/<int:pk>": {
        "GET":    [P("200 200 200 403 403 403  200 403 403 403",
                     path=lambda w: {"pk": w.invitation.pk})],
        "DELETE": [P("200 200 403 403 403 403  200 403 403 403",
                     path=lambda w: {"pk": w.invitation.pk})],
    },
    "api/v1/invitations/<int:pk>/resend": {
        "POST": [P("200 200 403 403 403 403  200 403 403 403",
                   path=lambda w: {"pk": w.invitation.pk})],
    },
    # Keys: a member sees and makes their own (usage keys bound to themselves); a team-bound
    # management key its team's.
    "api/v1/keys": {
        "GET":  [P("200 200 200 200 403 200  200 403 200 403", check=key_rows)],
        "POST": [P("201 201 403 201 403 201  201 403 201 403", body=lambda w: {"name": "made"},
                   check=key_made(None, None)),
                 P("201 201 403 403 403 403  201 403 201 403",
                   body=lambda w: {"name": "made", "kind": "management"},
                   check=key_made(None, None, "management")),
                 P("201 201 403 404 403 201  201 403 404 403",
                   body=lambda w: {"name": "made", "team": "beta"},
                   check=key_made("beta", None)),
                 P("201 403 403 403 403 403  403 403 403 403",
                   body=lambda w: {"name": "made", "member": w.users["owner"].email},
                   check=key_made(None, "owner"))],
    },
    "api/v1/keys/<str:hash>": {
        "GET":    [P("200 200 200 404 403 404  200 403 404 403", path=key_hash("owner_key")),
                   P("200 200 200 404 403 404  200 403 200 403", path=key_hash("alpha_key")),
                   P("200 200 200 200 403 404  200 403 404 403", path=key_hash("member_key"))],
        "PATCH":  [P("200 403 403 404 403 404  403 403 404 403", path=key_hash("owner_key"),
                     body=lambda w: {"disabled": True}),
                   P("200 200 403 404 403 404  200 403 404 403", path=key_hash("beta_key"),
                     body=lambda w: {"disabled": True}),
                   P("200 200 403 404 403 404  200 403 200 403", path=key_hash("alpha_key"),
                     body=lambda w: {"name": "renamed"})],
        "DELETE": [P("200 200 403 200 403 404  200 403 404 403", path=key_hash("member_key")),
                   P("200 403 403 404 403 404  403 403 404 403", path=key_hash("owner_key"))],
    },
    # The calling key itself (OpenRouter's GET /key): keys only.
    "api/v1/key": {
        "GET": [P("403 403 403 403 403 403  200 200 200 200", check=own_key)],
    },
    "api/v1/credits": {
        "GET": [P("200 200 200 200 200 200  200 403 200 403")],
    },
    "api/v1/generation": {
        "GET": [P("200 200 200 404 200 200  200 404 404 404",
                  query=lambda w: {"id": "ev-beta-1"}, check=generation_of("beta")),
                P("200 200 200 200 200 404  200 200 200 200",
                  query=lambda w: {"id": "ev-member-1"}, check=generation_of("member"))],
    },
    "api/v1/activity": {
        "GET": [P("200 200 200 200 200 200  200 200 200 200")],
    },
    "api/v1/organization/members": {
        "GET": [P("200 200 200 403 403 403  200 403 403 403")],
    },
    # The audit log is the whole organization's: a key bound to a team never reads it.
    "api/v1/audit-events": {
        "GET": [P("200 200 200 403 403 403  200 403 403 403")],
    },
    # Credits
    "api/v1/credits/balance": {
        "GET": [P("200 200 200 200 200 200  200 200 200 200", check=balance)],
    },
    "api/v1/credits/accounts": {
        "GET": [P("200 200 200 200 200 200  200 200 200 200", check=account_rows)],
    },
    # An account: seen as its entries are; its low balance set with credits:write for the
    # whole organization, or by the manager of its team.
    "api/v1/credits/accounts/<int:pk>": {
        "GET": [P("200 200 200 404 200 200  200 404 404 404", path=account_pk("beta")),
                P("200 200 200 200 200 404  200 200 200 200", path=account_pk("alpha")),
                P("200 200 200 404 200 404  200 404 404 404", path=account_pk(None))],
        "PATCH": [P("200 200 403 404 403 200  200 404 404 404", path=account_pk("beta"),
                    body=lambda w: {"low_balance": "1"}),
                  P("200 200 403 403 403 404  200 403 403 403", path=account_pk("alpha"),
                    body=lambda w: {"low_balance": "1"})],
    },
    "api/v1/credits/accounts/<int:pk>/entries": {
        "GET": [P("200 200 200 404 200 200  200 404 404 404", path=account_pk("beta")),
                P("200 200 200 200 200 404  200 200 200 200", path=account_pk("alpha")),
                P("200 200 200 404 200 404  200 404 404 404", path=account_pk(None))],
    },
    "api/v1/credits/lots": {
        "GET": [P("200 200 200 200 200 200  200 200 200 200", check=lot_rows)],
    },
    # Allocating draws on the pool: credits:write of the whole organization. Reclaiming: that,
    # or the team's manager. A team it may not see is 404.
    "api/v1/credits/allocations": {
        "POST": [P("201 201 403 403 403 403  201 403 403 403",
                   body=lambda w: {"team": "beta", "amount": "1"}),
                 P("201 201 403 403 403 403  201 403 403 403",
                   body=lambda w: {"team": "alpha", "amount": "1"}),
                 P("201 201 403 404 403 201  201 404 404 404",
                   body=lambda w: {"team": "beta", "amount": "1", "direction": "reclaim"}),
                 P("201 201 403 403 403 404  201 403 403 403",
                   body=lambda w: {"team": "alpha", "amount": "1", "direction": "reclaim"})],
    },
    # Usage: everyone with usage:write records; a retry of another's event id is refused
    # without showing the event to who may not see it.
    "api/v1/credits/usage": {
        "GET":  [P("200 200 200 200 200 200  200 200 200 200", check=usage_rows)],
        "POST": [P("201 201 403 201 403 201  201 201 201 201", body=lambda w: USAGE_BODY),
                 P("200 200 403 409 403 200  200 409 409 409", body=lambda w: SAME_AS_BETA)],
    },
    "api/v1/credits/authorizations": {
        "POST": [P("201 201 403 201 403 201  201 201 201 201",
                   body=lambda w: {"id": "matrix-new-hold", "amount": "0.5"}),
                 # beta's hold: a different request from whoever is charged elsewhere; beta's
                 # manager, charged to beta, makes the same request (its first result back)
                 P("409 409 403 409 403 200  409 409 409 409",
                   body=lambda w: {"id": "hold-beta-1", "amount": "1"})],
    },
    # Holds by the client's id or the public UUID: another team's, or a member's of another team, is
    # 404 (the member is on alpha: their holds are alpha's).
    "api/v1/credits/authorizations/<str:id>/capture": {
        "POST": [P("201 201 403 404 403 201  201 404 404 404", path=hold_id("beta"),
                   body=lambda w: CAPTURE),
                 P("201 201 403 404 403 404  201 201 201 404", path=hold_id("alpha", "uuid"),
                   body=lambda w: CAPTURE),
                 P("201 201 403 201 403 404  201 201 201 201", path=hold_id("member"),
                   body=lambda w: CAPTURE),
                 # capturing one's own hold under the id of beta's event: not beta's event back
                 P("200 200 403 404 403 404  200 409 409 404", path=hold_id("alpha"),
                   body=lambda w: SAME_AS_BETA)],
    },
    "api/v1/credits/authorizations/<str:id>/void": {
        "POST": [P("200 200 403 404 403 200  200 404 404 404", path=hold_id("beta", "uuid")),
                 P("200 200 403 200 403 404  200 200 200 200", path=hold_id("member"))],
    },
    "api/v1/credits/forecast": {
        "GET": [P("200 200 200 200 200 200  200 200 200 200", check=forecast_accounts)],
    },
    # Budgets: read with credits:read (rows as the principal sees teams and members); set with
    # credits:write organization-wide, or by a team manager for the members of the team.
    "api/v1/budgets": {
        "GET": [P("200 200 200 200 200 200  200 200 200 200")],
        "POST": [P("201 201 403 403 403 201  201 403 403 403",
                   body=lambda w: {"scope": "member", "member": w.users["worker"].email,
                                   "period": "daily", "limit": "1"}),
                 P("201 201 403 403 403 403  201 403 403 403",
                   body=lambda w: {"scope": "organization", "period": "daily", "limit": "1"})],
    },
    "api/v1/budgets/<uuid:id>": {
        "GET": [P("200 200 200 404 200 200  200 404 404 404", path=budget_id("team"))],
        "PATCH": [P("200 200 403 404 403 403  200 404 404 404", path=budget_id("team"),
                    body=lambda w: {"limit": "9"})],
        "DELETE": [P("200 200 403 404 403 200  200 404 404 404", path=budget_id("member"))],
    },
    # Alerts: read as the budgets are; acknowledged with credits:write organization-wide, or by
    # the manager of the budget's team (or of the member's team).
    "api/v1/alerts": {
        "GET": [P("200 200 200 200 200 200  200 200 200 200")],
    },
    "api/v1/alerts/<uuid:id>/acknowledge": {
        "POST": [P("200 200 403 404 403 200  200 404 404 404", path=alert_id("team")),
                 P("200 200 403 404 403 200  200 404 404 404", path=alert_id("member")),
                 P("200 200 403 403 403 403  200 403 403 403", path=alert_id("organization"))],
    },
    # Guardrails (OpenRouter's): read with keys:read; created, changed, deleted and given
    # members with keys:write for the whole organization; keys assigned by who may see and
    # manage them (a team-bound key: its team's; a key it may not see is a bad input; the
    # owner's key only by the owner).
    "api/v1/guardrails": {
        "GET":  [P("200 200 200 200 403 200  200 403 200 403")],
        "POST": [P("201 201 403 403 403 403  201 403 403 403",
                   body=lambda w: {"name": "new", "limit_usd": 3, "reset_interval": "daily"})],
    },
    "api/v1/guardrails/assignments/keys": {
        "GET": [P("200 200 200 200 403 200  200 403 200 403", check=assigned_key_rows)],
    },
    "api/v1/guardrails/assignments/members": {
        "GET": [P("200 200 200 200 403 200  200 403 200 403", check=assigned_member_rows)],
    },
    "api/v1/guardrails/<uuid:id>": {
        "GET":    [P("200 200 200 200 403 200  200 403 200 403", path=guardrail_id)],
        "PATCH":  [P("200 200 403 403 403 403  200 403 403 403", path=guardrail_id,
                     body=lambda w: {"limit_usd": 9})],
        "DELETE": [P("200 200 403 403 403 403  200 403 403 403", path=guardrail_id)],
    },
    "api/v1/guardrails/<uuid:id>/assignments/keys": {
        "GET":  [P("200 200 200 200 403 200  200 403 200 403", path=guardrail_id,
                   check=assigned_key_rows)],
        "POST": [P("200 200 403 400 403 400  200 403 200 403", path=guardrail_id,
                   body=hashes("alpha_mgmt")),
                 P("200 403 403 400 403 400  403 403 400 403", path=guardrail_id,
                   body=hashes("owner_key"))],
    },
    "api/v1/guardrails/<uuid:id>/assignments/keys/remove": {
        "POST": [P("200 200 403 400 403 400  200 403 200 403", path=guardrail_id,
                   body=hashes("alpha_key")),
                 P("200 200 403 200 403 400  200 403 400 403", path=guardrail_id,
                   body=hashes("member_key"))],
    },
    "api/v1/guardrails/<uuid:id>/assignments/members": {
        "GET":  [P("200 200 200 200 403 200  200 403 200 403", path=guardrail_id,
                   check=assigned_member_rows)],
        "POST": [P("200 200 403 403 403 403  200 403 403 403", path=guardrail_id,
                   body=user_ids("member"))],
    },
    "api/v1/guardrails/<uuid:id>/assignments/members/remove": {
        "POST": [P("200 200 403 403 403 403  200 403 403 403", path=guardrail_id,
                   body=user_ids("worker"))],
    },
    "api/v1/credits/report": {
        "GET": [P("200 200 200 200 200 200  200 200 200 200", check=report),
                P("200 200 200 200 200 200  200 200 200 200",
                  query=lambda w: {"format": "csv", "period": "monthly"})],
    },
    # Exports (billing area): billing:read, and the kind's scope; rows as the principal reads
    # them; a job is its requester's own (the owner's session here: others 404).
    "api/v1/billing/exports": {
        "GET":  [P("200 200 200 403 403 403  200 403 403 403")],
        "POST": [P("201 201 201 403 403 403  201 403 403 403",
                   body=lambda w: {"kind": "usage", "format": "csv"}),
                 P("201 201 201 403 403 403  201 403 403 403",
                   body=lambda w: {"kind": "ledger", "format": "pdf",
                                   "filters": {"from": "2020-01-01"}})],
    },
    "api/v1/billing/exports/usage.<str:fmt>": {
        "GET": [P("200 200 200 403 403 403  200 403 403 403", path=lambda w: {"fmt": "csv"},
                  check=exported_usage),
                P("200 200 200 403 403 403  200 403 403 403",
                  path=lambda w: {"fmt": "focus.csv"})],
    },
    "api/v1/billing/exports/ledger.<str:fmt>": {
        "GET": [P("200 200 200 403 403 403  200 403 403 403", path=lambda w: {"fmt": "json"})],
    },
    "api/v1/billing/exports/<uuid:id>": {
        "GET": [P("200 404 404 403 403 403  404 403 403 403", path=export_id)],
    },
    "api/v1/billing/exports/<uuid:id>/download": {
        "GET": [P("200 404 404 403 403 403  404 403 403 403", path=export_id)],
    },
    # Notifications: the caller's own (any member; a key acting for no member has none and sets
    # no preferences). Webhooks: the organization's, `org:write` (owner, admin, a key of the
    # whole organization), reads included (URLs may carry tokens).
    "api/v1/notifications": {
        "GET": [P("200 200 200 200 200 200  200 403 200 403", check=own_notifications)],
    },
    "api/v1/notifications/<str:id>/read": {
        "POST": [P("200 404 404 404 404 404  404 403 404 403", path=owners_notification)],
    },
    "api/v1/notifications/read-all": {
        "POST": [P("200 200 200 200 200 200  403 403 403 403")],
    },
    "api/v1/notification-preferences": {
        "GET": [P("200 200 200 200 200 200  403 403 403 403")],
        "PUT": [P("200 200 200 200 200 200  403 403 403 403",
                  body=lambda w: {"preferences": {"balance.low": {"email": False}}})],
    },
    "api/v1/webhooks": {
        "GET":  [P("200 200 403 403 403 403  200 403 403 403")],
        "POST": [P("201 201 403 403 403 403  201 403 403 403",
                   body=lambda w: {"url": "https://hooks.matrix.test/new",
                                   "events": ["budget.exhausted"]})],
    },
    "api/v1/webhooks/<str:id>": {
        "GET":    [P("200 200 403 403 403 403  200 403 403 403", path=endpoint_id)],
        "PATCH":  [P("200 200 403 403 403 403  200 403 403 403", path=endpoint_id,
                     body=lambda w: {"enabled": False})],
        "DELETE": [P("204 204 403 403 403 403  204 403 403 403", path=endpoint_id)],
    },
    "api/v1/webhooks/<str:id>/rotate-secret": {
        "POST": [P("200 200 403 403 403 403  200 403 403 403", path=endpoint_id)],
    },
    "api/v1/webhooks/<str:id>/test": {
        "POST": [P("202 202 403 403 403 403  202 403 403 403", path=endpoint_id)],
    },
    "api/v1/webhooks/<str:id>/deliveries": {
        "GET": [P("200 200 403 403 403 403  200 403 403 403", path=endpoint_id)],
    },
    "api/v1/webhooks/<str:id>/deliveries/<str:message_id>/resend": {
        "POST": [P("202 202 403 403 403 403  202 403 403 403", path=delivery_id)],
    },
    # The OpenRouter credit sync: read with billing:read (owner, admin, billing, a key of the
    # whole organization), changed and synced with billing:write (owner, billing). Syncs go to
    # the tests' unreachable OpenRouter: a snapshot with status error.
    "api/v1/billing/openrouter": {
        "GET":    [P("200 200 200 403 403 403  200 403 403 403")],
        "PUT":    [P("200 403 200 403 403 403  200 403 403 403",
                     body=lambda w: {"drift_threshold": "3", "enabled": False})],
        "DELETE": [P("204 403 204 403 403 403  204 403 403 403")],
    },
    "api/v1/billing/openrouter/sync": {
        "POST": [P("201 403 201 403 403 403  201 403 403 403")],
    },
    "api/v1/billing/openrouter/snapshots": {
        "GET": [P("200 200 200 403 403 403  200 403 403 403")],
    },
    # Purchases: bought with billing:write (owners and billing members, keys of the whole
    # organization), read with billing:read (and admins); a team-bound key holds neither. The
    # providers' webhooks take no credential but their signature: 400 without one, for anyone.
    "api/v1/credits/purchase": {
        "POST": [P("201 403 201 403 403 403  201 403 403 403",
                   body=lambda w: {"amount": "10.00", "provider": "manual"})],
    },
    "api/v1/billing/orders": {
        "GET": [P("200 200 200 403 403 403  200 403 403 403")],
    },
    "api/v1/billing/orders/<uuid:id>": {
        "GET": [P("200 200 200 403 403 403  200 403 403 403", path=order_id)],
    },
    "api/v1/billing/webhooks/stripe": {
        "POST": [P("400 400 400 400 400 400  400 400 400 400",
                   body=lambda w: {"id": "evt_1", "type": "checkout.session.completed",
                                   "data": {"object": order_id(w)}})],
    },
    "api/v1/billing/webhooks/coinbase": {
        "POST": [P("400 400 400 400 400 400  400 400 400 400",
                   body=lambda w: {"event": {"id": "e1", "type": "charge:confirmed",
                                             "data": {"metadata": order_id(w)}}})],
    },
    # Billing documents: read with billing:read; a statement generated and the billing settings
    # changed with billing:write.
    "api/v1/billing/invoices": {"GET": [P(BILLING_READ)]},
    "api/v1/billing/invoices/<str:number>": {"GET": [P(BILLING_READ, path=invoice_number)]},
    "api/v1/billing/invoices/<str:number>/pdf": {"GET": [P(BILLING_READ, path=invoice_number)]},
    "api/v1/billing/credit-notes": {"GET": [P(BILLING_READ)]},
    "api/v1/billing/credit-notes/<str:number>": {
        "GET": [P(BILLING_READ, path=credit_note_number)],
    },
    "api/v1/billing/credit-notes/<str:number>/pdf": {
        "GET": [P(BILLING_READ, path=credit_note_number)],
    },
    "api/v1/billing/statements": {
        "GET": [P(BILLING_READ)],
        "POST": [P("201 403 201 403 403 403  201 403 403 403",
                   body=lambda w: {"year": 2025, "month": 1})],
    },
    "api/v1/billing/statements/<str:id>": {"GET": [P(BILLING_READ, path=statement_id)]},
    "api/v1/billing/statements/<str:id>/pdf": {"GET": [P(BILLING_READ, path=statement_id)]},
    "api/v1/billing/profile": {
        "GET": [P(BILLING_READ)],
        "PATCH": [P("200 403 200 403 403 403  200 403 403 403",
                    body=lambda w: {"tax_rate": "7.5"})],
    },
    # Automatic top-up: read with billing:read (owner, admin, billing, a key of the whole
    # organization), changed with billing:write (owner, billing; no admin). A bad session id is
    # refused before Stripe is asked (not configured in this test).
    "api/v1/billing/topup": {
        "GET": [P("200 200 200 403 403 403  200 403 403 403")],
        "PUT": [P("200 403 200 403 403 403  200 403 403 403", body=lambda w: TOPUP_RULE)],
    },
    "api/v1/billing/topup/payment-method": {
        "POST": [P("400 403 400 403 403 403  400 403 403 403",
                   body=lambda w: {"session_id": "not-a-session"})],
    },
    "api/v1/billing/topup/attempts": {
        "GET": [P("200 200 200 403 403 403  200 403 403 403")],
    },
    # The gateway. Upstreams hold the organization's provider keys: `org:write`, as webhooks.
    # Chat completions spend: `usage:write` (a model no upstream serves is a 400 that holds
    # nothing; the request path itself is tests/credits/test_gateway*.py). Models: `usage:read`.
    "api/v1/upstreams": {
        "GET":  [P("200 200 403 403 403 403  200 403 403 403")],
        "POST": [P("201 201 403 403 403 403  201 403 403 403",
                   body=lambda w: {"name": "matrix-new", "kind": "openai_compatible",
                                   "base_url": "https://llm2.matrix.test/v1",
                                   "models": ["openai/"]})],
    },
    "api/v1/upstreams/<str:id>": {
        "GET":    [P("200 200 403 403 403 403  200 403 403 403", path=upstream_id)],
        "PATCH":  [P("200 200 403 403 403 403  200 403 403 403", path=upstream_id,
                     body=lambda w: {"enabled": False})],
        "DELETE": [P("204 204 403 403 403 403  204 403 403 403", path=upstream_id)],
    },
    "api/v1/chat/completions": {
        "POST": [P("400 400 403 400 403 400  400 400 400 400",
                   body=lambda w: {"model": "gpt-3.5-turbo", "max_tokens": 10,
                                   "messages": [{"role": "user", "content": "hi"}]})],
    },
    "api/v1/models": {
        "GET": [P("200 200 200 200 200 200  200 200 200 200", check=gateway_models)],
    },
    # Pages: the same principal (`accounts.pages.organization_page`); a page whose scope the role
    # lacks does not exist for it (404). Keys do not open pages (302 to the login).
    **{f"o/<slug:org>/{page}": {"GET": [P(codes, path=path)]} for page, codes, path in [
        ("",                          "200 200 200 200 200 200  302 302 302 302", None),
        ("balance/",                  "200 200 200 200 200 200  302 302 302 302", None),
        ("dashboard/conversations/",  "200 200 200 200 200 200  302 302 302 302", None),
        ("usage/",                    "200 200 200 200 200 200  302 302 302 302", None),
        ("usage/export.csv",          "200 200 200 200 200 200  302 302 302 302", None),
        ("ledger/",                   "200 200 200 200 200 200  302 302 302 302", None),
        ("ledger/accounts/<int:pk>/", "200 200 200 404 200 200  302 302 302 302",
         account_pk("beta")),
        ("team-balances/",            "200 200 200 200 200 200  302 302 302 302", None),
        ("me/",                       "200 200 200 200 200 200  302 302 302 302", None),
        ("teams/",                    "200 200 200 404 404 200  302 302 302 302", None),
        ("teams/new/",                "200 200 404 404 404 404  302 302 302 302", None),
        ("teams/<slug:slug>/",        "200 200 200 404 404 200  302 302 302 302", TEAM["beta"]),
        ("teams/<slug:slug>/edit/",   "200 200 404 404 404 404  302 302 302 302", TEAM["beta"]),
        ("members/",                  "200 200 200 404 404 404  302 302 302 302", None),
        ("members/invite/",           "200 200 404 404 404 404  302 302 302 302", None),
        ("members/<int:pk>/remove/",  "200 200 404 404 404 404  302 302 302 302",
         member_pk("viewer")),
        ("invitations/<int:pk>/revoke/", "200 200 404 404 404 404  302 302 302 302",
         lambda w: {"pk": w.invitation.pk}),
        ("keys/",                     "200 200 200 200 404 200  302 302 302 302", None),
        ("keys/new/",                 "200 200 404 200 404 200  302 302 302 302", None),
        ("keys/<str:hash>/",          "200 200 404 404 404 404  302 302 302 302",
         key_hash("beta_key")),
        ("keys/<str:hash>/created/",  "200 200 200 404 404 404  302 302 302 302",
         key_hash("beta_key")),
        ("keys/<str:hash>/delete/",   "200 200 404 404 404 404  302 302 302 302",
         key_hash("beta_key")),
        ("audit/",                    "200 200 200 404 404 404  302 302 302 302", None),
        ("settings/",                 "200 200 200 200 200 200  302 302 302 302", None),
        ("teams/<slug:slug>/members/<int:pk>/remove/", "200 200 404 404 404 200  302 302 302 302",
         lambda w: {"slug": "beta", "pk": w.place("beta", "worker")}),
        ("notifications/",               "200 200 200 200 200 200  302 302 302 302", None),
        ("notifications/bell/",          "200 200 200 200 200 200  302 302 302 302", None),
        ("notifications/preferences/",   "200 200 200 200 200 200  302 302 302 302", None),
        ("webhooks/",                    "200 200 404 404 404 404  302 302 302 302", None),
        ("webhooks/new/",                "200 200 404 404 404 404  302 302 302 302", None),
        ("webhooks/<str:id>/",           "200 200 404 404 404 404  302 302 302 302", endpoint_id),
        ("webhooks/<str:id>/secret/",    "200 200 404 404 404 404  302 302 302 302", endpoint_id),
        ("webhooks/<str:id>/rotate/",    "200 200 404 404 404 404  302 302 302 302", endpoint_id),
        ("webhooks/<str:id>/delete/",    "200 200 404 404 404 404  302 302 302 302", endpoint_id),
        ("webhooks/<str:id>/deliveries/", "200 200 404 404 404 404  302 302 302 302",
         endpoint_id),
        ("upstreams/",                   "200 200 404 404 404 404  302 302 302 302", None),
        ("upstreams/new/",               "200 200 404 404 404 404  302 302 302 302", None),
        ("upstreams/<uuid:id>/",         "200 200 404 404 404 404  302 302 302 302", upstream_id),
        ("upstreams/<uuid:id>/delete/",  "200 200 404 404 404 404  302 302 302 302", upstream_id),
        ("budgets/",                     "200 200 200 200 200 200  302 302 302 302", None),
        ("budgets/<uuid:id>/edit/",      "200 200 404 404 404 404  302 302 302 302",
         budget_id("team")),
        ("budgets/<uuid:id>/delete/",    "200 200 404 404 404 200  302 302 302 302",
         budget_id("member")),
        ("billing/openrouter/",            "200 200 200 404 404 404  302 302 302 302", None),
        ("billing/openrouter/connection/", "200 404 200 404 404 404  302 302 302 302", None),
        ("billing/openrouter/disconnect/", "200 404 200 404 404 404  302 302 302 302", None),
        ("billing/buy/",                 "200 404 200 404 404 404  302 302 302 302", None),
        ("billing/orders/",              "200 200 200 404 404 404  302 302 302 302", None),
        ("billing/orders/<uuid:id>/",    "200 200 200 404 404 404  302 302 302 302", order_id),
        ("billing/orders/<uuid:id>/confirm/", "200 404 200 404 404 404  302 302 302 302",
         order_id),
        ("billing/invoices/",            BILLING_READ_PAGE, None),
        ("billing/invoices/<str:number>/pdf/", BILLING_READ_PAGE, invoice_number),
        ("billing/credit-notes/<str:number>/pdf/", BILLING_READ_PAGE, credit_note_number),
        ("billing/statements/",          BILLING_READ_PAGE, None),
        ("billing/statements/<uuid:id>/pdf/", BILLING_READ_PAGE, statement_id),
        ("billing/settings/",            BILLING_READ_PAGE, None),
        ("billing/exports/",             "200 200 200 404 404 404  302 302 302 302", None),
        ("billing/exports/jobs/",        "200 200 200 404 404 404  302 302 302 302", None),
        ("billing/exports/<uuid:id>/download/", "200 404 404 404 404 404  302 302 302 302",
         export_id),
        ("billing/topup/",               "200 200 200 404 404 404  302 302 302 302", None),
        ("billing/topup/<uuid:id>/reject/", "200 404 200 404 404 404  302 302 302 302",
         topup_id),
    ]},
}
# Forms of the pages: the writes they make, and who may make them.
PAGE_POSTS: dict[str, list[Probe]] = {
    "teams/<slug:slug>/members/": [
        P("302 302 404 404 404 302  302 302 302 302", path=TEAM["beta"],
          # by id from the list, or by e-mail for a team manager (who sees no member list)
          body=lambda w: {"member": w.users["member"].pk, "email": w.users["member"].email,
                          "role": "member"},
          writers=("owner", "admin", "manager"))],
    "teams/<slug:slug>/members/<int:pk>/role/": [
        P("302 302 404 404 404 302  302 302 302 302",
          path=lambda w: {"slug": "beta", "pk": w.place("beta", "worker")},
          body=lambda w: {"role": "manager"}, writers=("owner", "admin"))],
    "teams/<slug:slug>/members/<int:pk>/remove/": [
        P("302 302 404 404 404 302  302 302 302 302",
          path=lambda w: {"slug": "beta", "pk": w.place("beta", "worker")},
          writers=("owner", "admin", "manager"))],
    "teams/<slug:slug>/allocate/": [
        P("302 302 302 404 302 302  302 302 302 302", path=TEAM["beta"],
          body=lambda w: {"amount": "1", "direction": "reclaim"},
          writers=("owner", "admin", "manager")),
        P("302 302 302 404 302 302  302 302 302 302", path=TEAM["beta"],
          body=lambda w: {"amount": "1", "direction": "allocate"}, writers=("owner", "admin"))],
    "members/<int:pk>/role/": [
        P("302 302 404 404 404 404  302 302 302 302", path=member_pk("viewer"),
          body=lambda w: {"role": "admin"}, writers=("owner", "admin")),
        P("302 302 404 404 404 404  302 302 302 302", path=member_pk("owner"),
          body=lambda w: {"role": "admin"}, writers=())],
    "members/<int:pk>/remove/": [
        P("302 302 404 404 404 404  302 302 302 302", path=member_pk("viewer"),
          writers=("owner", "admin"))],
    "invitations/<int:pk>/resend/": [
        P("302 302 404 404 404 404  302 302 302 302", path=lambda w: {"pk": w.invitation.pk},
          writers=("owner", "admin"))],
    "invitations/<int:pk>/revoke/": [
        P("302 302 404 404 404 404  302 302 302 302", path=lambda w: {"pk": w.invitation.pk},
          writers=("owner", "admin"))],
    "keys/<str:hash>/toggle/": [
        P("302 302 404 404 404 404  302 302 302 302", path=key_hash("beta_key"),
          writers=("owner", "admin")),
        P("302 302 404 302 404 404  302 302 302 302", path=key_hash("member_key"),
          writers=("owner", "admin", "member")),
        P("302 302 404 404 404 404  302 302 302 302", path=key_hash("owner_key"),
          writers=("owner",))],
    "keys/<str:hash>/delete/": [
        P("302 302 404 404 404 404  302 302 302 302", path=key_hash("owner_key"),
          writers=("owner",))],
    "notifications/read-all/": [
        P("302 302 302 302 302 302  302 302 302 302", writers=SESSIONS)],
    "notifications/<str:id>/read/": [
        P("302 404 404 404 404 404  302 302 302 302", path=owners_notification,
          writers=("owner",))],
    "notifications/preferences/": [
        P("302 302 302 302 302 302  302 302 302 302",
          body=lambda w: {"phone": "", "balance.low__in_app": "on"}, writers=SESSIONS)],
    "webhooks/new/": [
        P("302 302 404 404 404 404  302 302 302 302",
          body=lambda w: {"url": "https://hooks.matrix.test/page", "events": "balance.low"},
          writers=("owner", "admin"))],
    "webhooks/<str:id>/": [
        P("302 302 404 404 404 404  302 302 302 302", path=endpoint_id,
          body=lambda w: {"url": "https://hooks.matrix.test/edited", "events": "balance.low"},
          writers=("owner", "admin"))],
    "webhooks/<str:id>/rotate/": [
        P("302 302 404 404 404 404  302 302 302 302", path=endpoint_id,
          writers=("owner", "admin"))],
    "webhooks/<str:id>/delete/": [
        P("302 302 404 404 404 404  302 302 302 302", path=endpoint_id,
          writers=("owner", "admin"))],
    "webhooks/<str:id>/test/": [
        P("302 302 404 404 404 404  302 302 302 302", path=endpoint_id,
          writers=("owner", "admin"))],
    "webhooks/<str:id>/deliveries/<str:message_id>/resend/": [
        P("302 302 404 404 404 404  302 302 302 302", path=delivery_id,
          writers=("owner", "admin"))],
    "upstreams/new/": [
        P("302 302 404 404 404 404  302 302 302 302",
          body=lambda w: {"name": "matrix-page", "kind": "openai_compatible",
                          "base_url": "https://llm3.matrix.test/v1", "models": "gpt-4o",
                          "timeout": "30", "enabled": "on"},
          writers=("owner", "admin"))],
    "upstreams/<uuid:id>/": [
        P("302 302 404 404 404 404  302 302 302 302", path=upstream_id,
          body=lambda w: {"name": "matrix-upstream", "kind": "openai_compatible",
                          "base_url": "https://llm.matrix.test/v1", "models": "gpt-4o\nopenai/",
                          "timeout": "30"},
          writers=("owner", "admin"))],
    "upstreams/<uuid:id>/delete/": [
        P("302 302 404 404 404 404  302 302 302 302", path=upstream_id,
          writers=("owner", "admin"))],
    "budgets/": [
        P("302 302 404 404 404 302  302 302 302 302",
          body=lambda w: {"scope": "member", "member": w.users["worker"].email,
                          "period": "daily", "limit": "1", "mode": "hard"},
          writers=("owner", "admin", "manager"))],
    "budgets/<uuid:id>/edit/": [
        P("302 302 404 404 404 404  302 302 302 302", path=budget_id("team"),
          body=lambda w: {"period": "monthly", "limit": "9", "mode": "hard",
                          "thresholds": "75, 90, 100"},
          writers=("owner", "admin"))],
    "budgets/<uuid:id>/delete/": [
        P("302 302 404 404 404 302  302 302 302 302", path=budget_id("member"),
          writers=("owner", "admin", "manager"))],
    "budgets/alerts/<uuid:id>/acknowledge/": [
        P("302 302 302 404 302 302  302 302 302 302", path=alert_id("team"),
          writers=("owner", "admin", "manager"))],
    "billing/openrouter/connection/": [
        P("302 404 302 404 404 404  302 302 302 302",
          body=lambda w: {"key": "", "drift_threshold": "4", "enabled": "on"},
          writers=("owner", "billing"))],
    "billing/openrouter/sync/": [
        P("302 404 302 404 404 404  302 302 302 302", writers=("owner", "billing"))],
    "billing/openrouter/disconnect/": [
        P("302 404 302 404 404 404  302 302 302 302", writers=("owner", "billing"))],
    "billing/buy/": [
        P("302 404 302 404 404 404  302 302 302 302",
          body=lambda w: {"pack": "custom", "custom_amount": "12.50", "provider": "manual"},
          writers=("owner", "billing"))],
    "billing/orders/<uuid:id>/confirm/": [
        P("302 404 302 404 404 404  302 302 302 302", path=order_id,
          writers=("owner", "billing"))],
    "billing/statements/": [
        P("302 403 302 404 404 404  302 302 302 302", body=lambda w: {"month": "2025-01"},
          writers=("owner", "billing"))],
    "billing/settings/": [
        P("302 403 302 404 404 404  302 302 302 302",
          body=lambda w: {"number_prefix": "ACMEX", "tax_rate": "7.5"},
          writers=("owner", "billing"))],
    # A small export streams (a read: nobody writes).
    "billing/exports/": [
        P("200 200 200 404 404 404  302 302 302 302",
          body=lambda w: {"kind": "usage", "format": "csv"}, writers=())],
    "billing/topup/": [
        P("302 302 302 404 404 404  302 302 302 302",
          body=lambda w: {"threshold": "10", "mode": "amount", "amount": "20",
                          "monthly_cap": "100"},
          writers=("owner", "billing"))],
    # Stripe is not configured here: the card's checkout is refused with a message, no write.
    "billing/topup/card/": [
        P("302 302 302 404 404 404  302 302 302 302", writers=())],
    "billing/topup/<uuid:id>/approve/": [
        P("302 302 302 404 404 404  302 302 302 302", path=topup_id,
          writers=("owner", "billing"))],
    "billing/topup/<uuid:id>/reject/": [
        P("302 302 302 404 404 404  302 302 302 302", path=topup_id,
          writers=("owner", "billing"))],
    "settings/": [
        P("302 302 403 403 403 403  302 302 302 302",
          body=lambda w: {"name": "Renamed", "currency": "USD", "time_zone": "UTC"},
          writers=("owner", "admin"))],
}
for _page, _probes in PAGE_POSTS.items():
    MATRIX.setdefault(f"o/<slug:org>/{_page}", {})["POST"] = _probes
# Forms only: GET is 405 for who may open them (404 for who may not; allocate checks the method
# first).
for _page, _codes in [
    ("teams/<slug:slug>/members/",                "405 405 405 405 405 405  302 302 302 302"),
    ("teams/<slug:slug>/members/<int:pk>/role/",  "405 405 405 405 405 405  302 302 302 302"),
    ("teams/<slug:slug>/allocate/",               "405 405 405 405 405 405  405 405 405 405"),
    ("members/<int:pk>/role/",                    "405 405 404 404 404 404  302 302 302 302"),
    ("invitations/<int:pk>/resend/",              "405 405 404 404 404 404  302 302 302 302"),
    ("keys/<str:hash>/toggle/",                   "405 405 404 405 404 405  302 302 302 302"),
    ("notifications/read-all/",                   "405 405 405 405 405 405  302 302 302 302"),
    ("notifications/<str:id>/read/",              "405 405 405 405 405 405  302 302 302 302"),
    ("webhooks/<str:id>/test/",                   "405 405 404 404 404 404  302 302 302 302"),
    ("budgets/alerts/<uuid:id>/acknowledge/",      "405 405 405 405 405 405  302 302 302 302"),
    ("billing/openrouter/sync/",                   "405 404 405 404 404 404  302 302 302 302"),
    ("billing/topup/card/",                       "405 405 405 404 404 404  302 302 302 302"),
    ("billing/topup/<uuid:id>/approve/",          "405 405 405 404 404 404  302 302 302 302"),
    ("webhooks/<str:id>/deliveries/<str:message_id>/resend/",
     "405 405 404 404 404 404  302 302 302 302"),
]:
    _post = MATRIX[f"o/<slug:org>/{_page}"]["POST"][0]
    MATRIX[f"o/<slug:org>/{_page}"]["GET"] = [replace(_post, codes=_codes, writers=None)]
# fmt: on

# Cells that disagree with the rules, known and reported, with the reason: each must still fail
# as stated (`test_the_access_matrix`), so that a fix removes it from here.
KNOWN_GAPS: dict[str, str] = {}

# Routes without data of one organization (the tenant walker's EXEMPT, and pages outside /o/).
NOT_ORGANIZATION_ROUTES = ("", "invitations/<str:token>/")


def _in_scope(route: str) -> bool:
    """Routes the matrix must cover: the API (but the schema) and the organization's pages."""
    if route in EXEMPT or any(route.startswith(p) for p in EXEMPT_PREFIXES):
        return False
    return route.startswith("api/v1/") or route.startswith("o/<slug:org>/")


def missing_routes(matrix: dict[str, dict[str, list[Probe]]]) -> list[str]:
    """What the URL conf and the schema have that `matrix` lacks, one line each, by name."""
    missing = []
    routes = url_routes()
    for url in routes:
        if not _in_scope(url.route):
            continue
        if url.route not in matrix:
            view = url.view_class or url.callback
            missing.append(f"route {url.route!r} ({view.__module__}.{view.__name__}) "
                           "is not in MATRIX")  # fmt: skip
            continue
        methods = url.api_methods or {"GET"}  # a page: GET at least
        missing += [f"{m} {url.route!r}: no probe in MATRIX"
                    for m in sorted(methods - set(matrix[url.route]))]  # fmt: skip
    by_shape = {shape(r): r for r in matrix}
    for path, methods in schema_operations().items():
        if not _in_scope(path.lstrip("/")):
            continue
        route = by_shape.get(shape(path))
        if route is None:
            missing.append(f"schema path {path!r} is not in MATRIX")
            continue
        missing += [f"{m} {path} (schema): no probe in MATRIX[{route!r}]"
                    for m in sorted(methods - set(matrix[route]))]  # fmt: skip
    stale = set(matrix) - {u.route for u in routes}
    missing += [f"MATRIX names {r!r}, which is no longer in the URL conf" for r in sorted(stale)]
    return missing


# Sending and checking ---------------------------------------------------------------------------


def _send(w: World, principal: str, route: str, method: str, probe: Probe):
    params = {"org": w.org.slug, **(probe.path(w) if probe.path else {})}
    url = _url(route, params)
    query = probe.query(w) if probe.query else {}
    body = probe.body(w) if probe.body else None
    # What the principal sent itself (an answer may echo it): the values it filled in
    sent = [str(v) for v in (*params.values(), *query.values(), *(body or {}).values())]
    client = w.clients[principal]
    if method == "GET":
        return client.get(url, query), sent
    if route.startswith("api/"):
        data = json.dumps(body) if body is not None else ""
        return client.generic(method, url, data, content_type="application/json"), sent
    form = urlencode(body or {})
    return client.generic(method, url, form, content_type="application/x-www-form-urlencoded"), sent


def _without_echo(text: str, sent: list[str]) -> str:
    for value in sorted({v for v in sent if len(v) >= 5}, key=len, reverse=True):
        text = text.replace(value, "")
    return text


def _error_format(response, status: int) -> str | None:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"{status} not in the error format: {response.content[:200]!r}"
    kind = {403: "forbidden", 404: "not_found"}[status]
    if error.get("code") != status or error.get("metadata", {}).get("type") != kind:
        return f"{status} not in the error format: {response.content[:200]!r}"
    return None


def check_cell(w: World, principal: str, route: str, method: str, probe: Probe, before) -> list:
    """Send one probe as one principal (in a savepoint, rolled back); returns what went wrong."""
    expected = probe.expected()[principal]
    errors = []
    with transaction.atomic():
        written = rows_written()
        response, sent = _send(w, principal, route, method, probe)
        status = response.status_code
        content = b"".join(response.streaming_content) if response.streaming else response.content
        text = content.decode(errors="replace")
        if status != expected:
            errors.append(f"{status}, expected {expected}: {text[:300]}")
        refused = status >= 400 or expected >= 400
        if probe.writers is not None:
            refused = principal not in probe.writers
        if refused and rows_written() != written and (after := snapshot(w.org)) != before:
            changed = sorted(m for m in after if after[m] != before.get(m))
            errors.append(f"must write nothing ({status}, expected {expected}), wrote {changed}")
        if status in (403, 404) and route.startswith("api/") and status == expected:
            errors += filter(None, [_error_format(response, status)])
        shown = _without_echo(text, sent)
        leaked = sorted(m for m in w.hidden[principal] if m and m in shown)
        if leaked:
            errors.append(f"shows what it may not see: {leaked}")
        if probe.check and status == expected and status < 300:
            try:
                probe.check(w, principal, response)
            except (AssertionError, KeyError, TypeError, ValueError) as exc:
                errors.append(f"{type(exc).__name__} {exc}")
        transaction.set_rollback(True)
    w.clients[principal].cookies.pop("messages", None)  # a page's flash message is not carried
    return errors


def run_matrix(w: World, matrix=None, principals=PRINCIPALS) -> list[str]:
    """Every cell of `matrix` (default MATRIX); one line per failure, naming the cell."""
    before, failures = snapshot(w.org), []
    for route, methods in (matrix or MATRIX).items():
        for method, probes in methods.items():
            for i, probe in enumerate(probes):
                for principal in principals:
                    where = f"{method} /{route} [probe {i}] as {principal}"
                    errors = check_cell(w, principal, route, method, probe, before)
                    failures += [f"{where}: {e}" for e in errors]
    return failures


# Tests --------------------------------------------------------------------------------------------


def test_every_route_is_in_the_matrix():
    missing = missing_routes(MATRIX)
    assert not missing, "Add to MATRIX:\n" + "\n".join(missing)
    for route, methods in MATRIX.items():
        for method, probes in methods.items():
            for probe in probes:
                probe.expected()  # one code per principal
                assert "<" not in route.replace("<slug:org>", "") or probe.path, (route, method)


def test_the_access_matrix(tenant, prices):
    world = build_world(tenant)
    failures = run_matrix(world)
    known = [f for f in failures if any(f.startswith(gap) for gap in KNOWN_GAPS)]
    failures = [f for f in failures if f not in known]
    assert not failures, f"{len(failures)} cells:\n" + "\n".join(failures)
    still = [gap for gap in KNOWN_GAPS if not any(f.startswith(gap) for f in known)]
    assert not still, f"fixed: remove from KNOWN_GAPS: {still}"


def test_the_matrix_can_fail(tenant, prices):
    """The same checks report a wrong expectation, a refused write that wrote, a leak and a
    wrong row, and a route missing from the table, by name."""
    world = build_world(tenant)
    # As if the member's session were the owner's: they capture beta's hold and list all usage.
    as_owner = replace(world, clients={**world.clients, "member": world.clients["owner"]})
    matrix = {
        "api/v1/credits/authorizations/<str:id>/capture": {
            "POST": MATRIX["api/v1/credits/authorizations/<str:id>/capture"]["POST"][:1]
        },
        "api/v1/credits/usage": {"GET": MATRIX["api/v1/credits/usage"]["GET"]},
        # A deliberately wrong expectation: the viewer cannot rename the organization.
        "api/v1/organization": {
            "PATCH": [P("200 200 403 403 200 403  200 403 200 403", body=lambda w: {"name": "R"})]
        },  # fmt: skip
    }
    failures = "\n".join(run_matrix(as_owner, matrix, principals=("member", "viewer")))
    for expected in (
        "POST /api/v1/credits/authorizations/<str:id>/capture [probe 0] as member: 201, "
        "expected 404",
        "GET /api/v1/credits/usage [probe 0] as member: shows what it may not see",
        "GET /api/v1/credits/usage [probe 0] as member: AssertionError",
        "PATCH /api/v1/organization [probe 0] as viewer: 403, expected 200",
    ):
        assert expected in failures, f"{expected!r} not in:\n{failures}"
    # A refused write that writes is reported: the viewer "refused" while the owner's write ran.
    as_viewer = replace(world, clients={**world.clients, "viewer": world.clients["owner"]})
    wrong = {"api/v1/organization": {"PATCH": [P("200 200 403 403 403 403  200 403 200 403",
                                                 body=lambda w: {"name": "R"})]}}  # fmt: skip
    failures = "\n".join(run_matrix(as_viewer, wrong, principals=("viewer",)))
    assert "as viewer: 200, expected 403" in failures, failures
    assert (
        "as viewer: must write nothing (200, expected 403), wrote ['accounts.AuditEvent', "
        "'accounts.Organization']" in failures
    ), failures
    # A route missing from the table is named.
    without = {r: m for r, m in MATRIX.items() if r != "api/v1/credits/report"}
    without["api/v1/keys"] = {"GET": MATRIX["api/v1/keys"]["GET"]}
    missing = "\n".join(missing_routes(without))
    assert "route 'api/v1/credits/report' (credits.apis_usage.ReportApi) is not in MATRIX" in (
        missing
    )
    assert "POST 'api/v1/keys': no probe in MATRIX" in missing


# Links: a page shows a principal only what it may open ----------------------------------------


class _Links(HTMLParser):
    """The portal's own URLs a page links to (`a href`) or fetches itself (`hx-get`)."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for url in (attrs.get("href") if tag == "a" else None, attrs.get("hx-get")):
            path = urlsplit(url or "")._replace(fragment="").geturl()
            if path.startswith("/") and not path.startswith("//"):
                self.urls.append(path)


def page_links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return sorted(set(parser.urls))


def page_urls(w: World, principal: str) -> list[str]:
    """The organization's pages `principal` opens (MATRIX: GET answers it 200), filled in."""
    urls = []
    for route, methods in MATRIX.items():
        probe = methods.get("GET", [None])[0]
        if not route.startswith("o/<slug:org>/") or probe is None:
            continue
        if probe.expected()[principal] == 200:
            url = _url(route, {"org": w.org.slug, **(probe.path(w) if probe.path else {})})
            urls.append(f"{url}?{urlencode(probe.query(w))}" if probe.query else url)
    return urls


def broken_links(
    client: APIClient, pages: list[str], reader: APIClient | None = None
) -> tuple[list[str], int]:
    """Each link of the HTML among `pages` (as `client` gets them) that does not end in 200 for
    `reader` (default: the same client; redirects followed), with its status; and how many links
    were followed."""
    reader = reader or client
    status: dict[str, int] = {}
    broken = []
    for page in pages:
        with transaction.atomic():
            response = client.get(page)
            assert response.status_code == 200, (page, response.status_code)
            if response["Content-Type"].startswith("text/html"):
                for url in page_links(response.content.decode()):
                    if url not in status:
                        status[url] = reader.get(url, follow=True).status_code
                    if status[url] != 200:
                        broken.append(f"{page} links to {url}: {status[url]}")
            transaction.set_rollback(True)
    return broken, len(status)


def test_every_link_of_every_page_opens_for_its_reader(tenant, prices):
    """Pages show nothing the same role cannot open: every link (and htmx fetch) of every
    organization page a role opens answers that role 200. Before this test, "My usage" showed a
    viewer "Manage keys", a link to the keys page, which does not exist for a viewer (404)."""
    world = build_world(tenant)
    broken = []
    for principal in SESSIONS:
        pages = page_urls(world, principal)
        assert f"/o/{world.org.slug}/me/" in pages and len(pages) >= 10, (principal, pages)
        found, followed = broken_links(world.clients[principal], pages)
        assert followed >= 10, (principal, followed)  # the parser finds the pages' links
        broken += [f"as {principal}: {line}" for line in found]
    assert not broken, "\n".join(broken)


def test_the_link_check_can_fail(tenant, prices):
    """Links are the portal's own paths of `a href` and `hx-get`; a link its reader cannot open
    is named with its page and status (here the owner's "My usage" read by a viewer)."""
    html = (
        '<a href="/o/x/me/#top">me</a><a href="#content">skip</a><a href="https://e.test/">e</a>'
        '<div hx-get="/o/x/balance/"></div><a href="//e.test/x">x</a><link href="/static/a.css">'
    )
    assert page_links(html) == ["/o/x/balance/", "/o/x/me/"]
    world = build_world(tenant)
    me = f"/o/{world.org.slug}/me/"
    found, _ = broken_links(world.clients["owner"], [me], reader=world.clients["viewer"])
    assert f"{me} links to /o/{world.org.slug}/keys/: 404" in found, found
