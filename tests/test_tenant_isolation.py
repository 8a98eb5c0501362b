"""Tenant isolation over every route, now and as routes are added.

Routes come from the URL configuration (walked through every include) and from the OpenAPI
schema. Each must appear in ROUTES (how to probe it with organization A's objects, as
organization B) or in EXEMPT (with the reason it holds no tenant data); a new route that is in
neither fails `test_every_route_is_in_the_table`, naming it.

Organization A ("acme") has one of everything; organization B ("globex") calls with its own
management key (API) or its owner's session (pages). Every probe must: not answer 5xx, answer
the expected status (404 for A's objects), show none of A's identifiers, and leave every row of
A unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.db import models
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.generators import SchemaGenerator
from rest_framework.views import APIView

from accounts.access import Principal
from accounts.models import AuditEvent, Membership, Organization
from accounts.roles import Role, TeamRole
from accounts.services import invitation_create, team_create, team_member_set
from billing.exports import ExportFilters
from billing.models import (
    CreditNote,
    ExportJob,
    Invoice,
    OpenRouterSnapshot,
    Order,
    Statement,
    TopUp,
)
from billing.services.documents import billing_profile_of
from billing.services.exports import export_job_create, export_job_run
from billing.services.orders import order_create
from billing.services.sync import openrouter_connection_set, openrouter_sync
from billing.services.topup import RuleInput, topup_rule_set, topup_start
from credits.models import (
    Alert,
    Budget,
    CreditLot,
    Guardrail,
    Hold,
    LedgerAccount,
    Upstream,
    UsageEvent,
)
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

PROJECT_APPS = ("accounts", "notifications", "credits", "billing")
API_METHODS = ("get", "post", "put", "patch", "delete")


# Route discovery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UrlRoute:
    route: str  # as written in the URL conf, e.g. "api/v1/teams/<slug:slug>"
    callback: Callable

    @property
    def view_class(self):
        return getattr(self.callback, "view_class", None) or getattr(self.callback, "cls", None)

    @property
    def api_methods(self) -> set[str]:
        """The HTTP methods a DRF view implements (empty for pages)."""
        cls = self.view_class
        if cls is None or not issubclass(cls, APIView):
            return set()
        return {m.upper() for m in API_METHODS if hasattr(cls, m)}


def _walk(patterns, prefix: str = "") -> Iterator[UrlRoute]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield UrlRoute(prefix + str(entry.pattern), entry.callback)


def url_routes() -> list[UrlRoute]:
    """Every route of the URL configuration, includes resolved."""
    return list(_walk(get_resolver().url_patterns))


def shape(route: str) -> str:
    """A route with its parameters blanked, so that URL conf and schema paths compare:
    'api/v1/members/<int:pk>' and '/api/v1/members/{id}' are both 'api/v1/members/{}'."""
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", route.lstrip("/"))


def schema_operations() -> dict[str, set[str]]:
    """{schema path: {HTTP methods}} of the OpenAPI schema."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {
        path: {m.upper() for m in ops if m in API_METHODS} for path, ops in schema["paths"].items()
    }


# The world: organization A with one of everything, organization B with its own key -------------


@dataclass
class World:
    a: Tenant
    b: Tenant
    a_team: Any
    a_member: Any
    a_invitation: Any
    a_invitation_token: str
    a_key: Any
    a_usage_key: Any
    a_event: UsageEvent
    a_hold: Hold
    b_key: Any
    b_api: Any  # B's management key (every scope), an APIClient
    b_page: Client  # B's owner, logged in

    @property
    def a_pool(self) -> LedgerAccount:
        return LedgerAccount.objects.get(organization=self.a.org, kind=LedgerAccount.Kind.POOL)

    def markers(self) -> set[str]:
        """Strings that identify A's data and must never reach B."""
        found = {"acme", self.a_team.slug, self.a_event.event_id, self.a_hold.idempotency_key}
        for endpoint in WebhookEndpoint.objects.filter(organization=self.a.org):
            found |= {str(endpoint.public_id), endpoint.url}
        for upstream in Upstream.objects.filter(organization=self.a.org):
            found |= {str(upstream.public_id), upstream.name, upstream.base_url}
        found |= {
            str(n)
            for n in Notification.objects.filter(organization=self.a.org).values_list(
                "public_id", flat=True
            )
        }
        found |= set(
            OutboxMessage.objects.filter(organization=self.a.org).values_list(
                "message_id", flat=True
            )
        )
        for key in self.a.org.keys.all():
            found |= {key.hash, key.label}
        found |= set(
            AuditEvent.objects.filter(organization=self.a.org).values_list("hash", flat=True)
        )
        found |= {
            str(g)
            for g in Guardrail.objects.filter(organization=self.a.org).values_list(
                "public_id", flat=True
            )
        }
        found |= {A_OPENROUTER_KEY, *map(str, a_snapshot_ids(self))}
        found |= {
            str(o)
            for o in Order.objects.filter(organization=self.a.org).values_list(
                "public_id", flat=True
            )
        }
        found |= set(
            Invoice.objects.filter(organization=self.a.org).values_list("number", flat=True)
        )
        found |= set(
            CreditNote.objects.filter(organization=self.a.org).values_list("number", flat=True)
        )
        found |= {
            str(s)
            for s in Statement.objects.filter(organization=self.a.org).values_list(
                "public_id", flat=True
            )
        }
        found |= {str(j) for j in ExportJob.objects.filter(organization=self.a.org)
                  .values_list("public_id", flat=True)}  # fmt: skip
        found |= {str(t.order.public_id) for t in TopUp.objects.filter(organization=self.a.org)}
        found |= {"cus_acme", "pm_acme"}
        return found

    def a_ids(self, model: type[models.Model]) -> set[int]:
        return set(
            model.objects.filter(**{_org_lookup(model): self.a.org.pk}).values_list("pk", flat=True)
        )


def build_world(tenant: Tenant, other_tenant: Tenant) -> World:
    """A: a second team (slug unknown to B), a member who manages it, an invitation, management
    and usage keys, a grant, an allocation, a usage event and a hold (both through the API), and
    the audit events all of these wrote. B: a grant of 7 credits and a management key."""
    a = tenant
    a_team = team_create(
        organization=a.org, slug="acme-secret-team", name="Acme Secret", actor=SYSTEM
    )
    a_member = a.member(Role.MEMBER, email="a-member@acme.test")
    team_member_set(team=a_team, user=a_member, role=TeamRole.MANAGER, actor=SYSTEM)
    invitation, token = invitation_create(
        organization=a.org, email="a-invitee@acme.test", team=a_team, actor=SYSTEM
    )
    a_key, _ = a.key("management")
    a_usage_key, usage_secret = a.key("usage", team=a_team)
    a.grant("100")
    a.allocate("20", team=a_team)
    client = a.client(usage_secret)
    event = {"id": "acme-usage-event-1", "model": "gpt-4o", "prompt_tokens": 1000,
             "completion_tokens": 100}  # fmt: skip
    response = client.post("/api/v1/credits/usage", event, format="json")
    assert response.status_code == 201, response.content
    response = client.post(
        "/api/v1/credits/authorizations", {"id": "acme-hold-1", "amount": "1.5"}, format="json"
    )
    assert response.status_code == 201, response.content

    # A's webhook endpoint, and an event: the owner's notification, outbox messages (not sent)
    webhook_endpoint_create(
        organization=a.org, url="https://hooks.acme-secret.test/in", events=["balance.low"],
        actor=SYSTEM,
    )  # fmt: skip
    notify(organization=a.org, type="balance.low", data={"available": "1.5"})
    a_budget = budget_create(organization=a.org, scope="team", team=a_team, period="monthly",
                             limit="5", actor=SYSTEM)  # fmt: skip
    Alert.objects.create(organization=a.org, budget=a_budget, window_start=a_budget.created_at,
                         threshold=75, type=Alert.Type.THRESHOLD_CROSSED, spent=4,
                         limit=a_budget.limit)  # fmt: skip
    guardrail = guardrail_create(
        organization=a.org, fields={"name": "Acme Secret Guardrail", "limit_usd": 5}, actor=SYSTEM
    )
    guardrail_assign_keys(guardrail=guardrail, keys=[a_usage_key], actor=SYSTEM)
    guardrail_assign_members(guardrail=guardrail, members=[a_member], actor=SYSTEM)
    # A's OpenRouter connection, and a sync of it (against the tests' unreachable OpenRouter: a
    # snapshot with status error).
    a_openrouter, _ = openrouter_connection_set(
        organization=a.org, key=A_OPENROUTER_KEY, actor=SYSTEM
    )
    openrouter_sync(connection=a_openrouter, actor=SYSTEM)

    order_create(organization=a.org, amount="10", provider="manual", actor=SYSTEM)

    # A's billing documents: an invoice, a credit note, a statement.
    from .test_access_matrix import build_documents

    build_documents(a)

    # A's owner's export job, done (its file stored).
    export_job_run(job_id=export_job_create(
        principal=Principal.for_session(organization=a.org, user=a.owner), kind="usage",
        format="csv", filters=ExportFilters(), pseudonymize=False, actor=SYSTEM,
    ).pk)  # fmt: skip

    # A's automatic top-up: a saved card, a rule asking for approval, a top-up awaiting it.
    profile = billing_profile_of(a.org)
    profile.stripe_customer_id, profile.stripe_payment_method_id = "cus_acme", "pm_acme"
    profile.save()
    topup_rule_set(organization=a.org, actor=SYSTEM, data=RuleInput(
        enabled=True, threshold="1000", amount="20", monthly_cap="100", requires_approval=True,
    ))  # fmt: skip
    assert topup_start(organization_id=a.org.pk).state == TopUp.State.AWAITING_APPROVAL
    upstream_create(
        organization=a.org, name="Acme Secret Upstream", kind="openai_compatible",
        base_url="https://llm.acme-secret.test/v1", models=["gpt-4o", "acme-secret-model"],
        api_key="sk-acme-secret", actor=SYSTEM,
    )  # fmt: skip

    b = other_tenant
    b.grant("7")
    b_key, b_secret = b.key("management")
    page = Client()
    page.force_login(b.owner)
    return World(
        a=a, b=b, a_team=a_team, a_member=a_member, a_invitation=invitation,
        a_invitation_token=token, a_key=a_key, a_usage_key=a_usage_key,
        a_event=UsageEvent.objects.get(organization=a.org, event_id="acme-usage-event-1"),
        a_hold=Hold.objects.get(organization=a.org, idempotency_key="acme-hold-1"),
        b_key=b_key, b_api=b.client(b_secret), b_page=page,
    )  # fmt: skip


A_OPENROUTER_KEY = "sk-or-v1-" + "ac3e5ec2" * 8


def a_snapshot_ids(world: World) -> set:
    return set(
        OpenRouterSnapshot.objects.filter(organization=world.a.org).values_list(
            "public_id", flat=True
        )
    )


def only_b_snapshots(world: World, response) -> None:
    listed = {row["id"] for row in _rows(response)}
    assert listed, "B's own snapshot is missing: the check would be vacuous"
    assert not listed & {str(i) for i in a_snapshot_ids(world)}, "lists A's snapshots"


def _org_lookup(model: type[models.Model]) -> str | None:
    """The lookup from `model` to its organization (direct, or through one parent)."""
    fields = model._meta.get_fields()
    if model is Organization or "organization" in {f.name for f in fields}:
        return "pk" if model is Organization else "organization"
    for f in fields:
        if (
            f.many_to_one
            and f.related_model
            and "organization" in {g.name for g in f.related_model._meta.get_fields()}
        ):
            return f"{f.name}__organization"
    return None


def snapshot(org: Organization) -> dict[str, list]:
    """Every row the organization owns, in every model of the project's apps (new models
    included): {model label: sorted rows}."""
    out = {}
    for model in apps.get_models():
        if model._meta.app_label not in PROJECT_APPS or _org_lookup(model) is None:
            continue
        rows = model.objects.filter(**{_org_lookup(model): org.pk}).values()
        out[model._meta.label] = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return out


# The table ---------------------------------------------------------------------------------------

Fill = Callable[[World], Any]


@dataclass(frozen=True)
class Probe:
    """One request of B. `path`: the route's parameters (A's objects); `body`, `query`: what to
    send; `status`: what B must get; `check(world, response)`: more assertions."""

    status: int | tuple[int, ...]  # a tuple: any of these
    path: Fill | None = None
    body: Fill | None = None
    query: Fill | None = None
    check: Callable[[World, Any], None] | None = None
    markers: bool = True  # the response must contain none of A's identifiers


def _rows(response) -> list[dict]:
    data = response.json()
    return data["results"] if "results" in data else data["data"]


def no_ids_of(model, field: str = "id") -> Callable[[World, Any], None]:
    def check(world: World, response) -> None:
        listed = {row[field] for row in _rows(response)}
        assert not listed & world.a_ids(model), f"lists {model.__name__} rows of A"
        assert listed, "B's own rows are missing: the check would be vacuous"

    return check


def _b_used(world: World) -> Decimal:
    return sum(
        UsageEvent.objects.filter(organization=world.b.org).values_list("cost", flat=True),
        Decimal(0),
    )


def b_totals(world: World, response) -> None:
    """B's own figures: its grant of 7 and its own usage, nothing of A's 100 and usage."""
    body = response.json()
    data = body.get("data", body)
    credited = data.get("total_credited", data.get("total_credits"))
    used = data.get("total_used", data.get("total_usage"))
    assert Decimal(str(credited)) == 7, body
    assert Decimal(str(used)) == _b_used(world), body


def b_report(world: World, response) -> None:
    totals = response.json()["totals"]
    assert totals["events"] == UsageEvent.objects.filter(organization=world.b.org).count()
    assert Decimal(totals["cost"]) == _b_used(world)


def expect(predicate: Callable[[World, Any], bool]) -> Callable[[World, Any], None]:
    def check(world: World, response) -> None:
        assert predicate(world, response)

    return check


to_b_dashboard = expect(lambda w, r: r.url == f"/o/{w.b.org.slug}/")
own_org = expect(lambda w, r: r.json()["slug"] == w.b.org.slug)
empty = expect(lambda w, r: _rows(r) == [])


def fresh_in_b(model, field: str) -> Callable[[World, Any], None]:
    """B reusing A's idempotency key gets a new row of its own, not A's first result."""

    def check(world: World, response) -> None:
        value = getattr(world.a_event if model is UsageEvent else world.a_hold, field)
        assert model.objects.filter(organization=world.b.org, **{field: value}).count() == 1

    return check


def b_activity(world: World, response) -> None:
    """B's activity holds B's usage only (A's event is in a completed day of none of B's)."""
    rows = response.json()["data"]
    assert (
        sum(r["requests"] for r in rows)
        <= UsageEvent.objects.filter(organization=world.b.org).count()
    )


def b_forecast(world: World, response) -> None:
    """B's accounts and B's spend only."""
    body = response.json()
    ids = {a["id"] for a in body["accounts"]}
    assert ids and not ids & world.a_ids(LedgerAccount)
    spent = {r["window"]: Decimal(r["spent"]) for r in body["rates"]}
    assert spent["30d"] == _b_used(world)


empty_data = expect(lambda w, r: r.json()["data"] == [])


def only_b_members(world: World, response) -> None:
    emails = {m["email"] for m in response.json()["data"]}
    assert emails and emails <= {m.user.email for m in world.b.org.memberships.all()}, emails


def a_endpoint(world: World) -> WebhookEndpoint:
    """A's endpoint (a stand-in id once deleted, as in the leak self-test)."""
    found = WebhookEndpoint.objects.filter(url="https://hooks.acme-secret.test/in").first()
    return found or WebhookEndpoint(public_id="00000000-0000-4000-8000-000000000000")


def a_upstream(world: World) -> Upstream:
    """A's upstream (a stand-in id once deleted, as in the leak self-test)."""
    found = Upstream.objects.filter(organization=world.a.org).first()
    return found or Upstream(public_id="00000000-0000-4000-8000-000000000000")


def a_alert(world: World) -> Alert:
    """A's budget alert (a stand-in id once deleted, as in the leak self-test)."""
    found = Alert.objects.filter(organization=world.a.org).first()
    return found or Alert(public_id="00000000-0000-4000-8000-000000000000")


def a_budget(world: World) -> Budget:
    found = Budget.objects.filter(organization=world.a.org).order_by("id").first()
    return found or Budget(public_id="00000000-0000-4000-8000-000000000000")


def a_export(world: World) -> ExportJob:
    """A's export job (a stand-in id once deleted, as in the leak self-test)."""
    found = ExportJob.objects.filter(organization=world.a.org).first()
    return found or ExportJob(public_id="00000000-0000-4000-8000-000000000000")


def until_a_event(world: World) -> dict:
    return {"to": (world.a_event.occurred_at + timedelta(microseconds=1)).isoformat()}


def a_topup(world: World) -> str:
    found = TopUp.objects.filter(organization=world.a.org).select_related("order").first()
    return str(found.order.public_id) if found else "00000000-0000-4000-8000-000000000000"


def b_topup_rule(world: World, response) -> None:
    """B's own rule (none, or the one B set), never A's threshold of 1000."""
    body = response.json()
    assert body["threshold"] in (None, "10.00") and body["card_saved"] is False, body


def a_notification(world: World) -> Notification:
    return Notification.objects.filter(organization=world.a.org).first()


def a_message(world: World) -> OutboxMessage:
    return OutboxMessage.objects.filter(organization=world.a.org, channel="webhook").first()


def a_order(world: World) -> str:
    """A's order's public id (a stand-in if gone, as in the leak self-test)."""
    found = Order.objects.filter(organization=world.a.org).order_by("id").first()
    return str(found.public_id) if found else "00000000-0000-4000-8000-000000000000"


def b_orders_only(world: World, response) -> None:
    listed = {row["id"] for row in _rows(response)}
    assert a_order(world) not in listed
    assert listed == {
        str(o)
        for o in Order.objects.filter(organization=world.b.org).values_list("public_id", flat=True)
    }


def a_invoice(world: World) -> str:
    return Invoice.objects.filter(organization=world.a.org).order_by("id")[0].number


def a_credit_note(world: World) -> str:
    return CreditNote.objects.filter(organization=world.a.org).order_by("id")[0].number


def a_statement(world: World) -> str:
    return str(Statement.objects.filter(organization=world.a.org).order_by("id")[0].public_id)


def _page_params(world: World, route: str, org: str) -> dict:
    """A page route's parameters: `org` and A's objects (a team, a membership or an account or
    an invitation for `pk`, a key, a webhook endpoint or a notification for `id`, a message)."""
    params = {"org": org, "slug": world.a_team.slug, "hash": world.a_key.hash}
    if "webhooks/<str:id>" in route:
        params["id"] = a_endpoint(world).public_id
        params["message_id"] = a_message(world).message_id
    elif "notifications/<str:id>" in route:
        params["id"] = a_notification(world).public_id
    elif "upstreams/<uuid:id>" in route:
        params["id"] = a_upstream(world).public_id
    elif "budgets/alerts/<uuid:id>" in route:
        params["id"] = a_alert(world).public_id
    elif "budgets/<uuid:id>" in route:
        params["id"] = a_budget(world).public_id
    elif "billing/orders/<uuid:id>" in route:
        params["id"] = a_order(world)
    elif "billing/statements/<uuid:id>" in route:
        params["id"] = a_statement(world)
    if "billing/invoices/<str:number>" in route:
        params["number"] = a_invoice(world)
    elif "billing/credit-notes/<str:number>" in route:
        params["number"] = a_credit_note(world)
    elif "billing/exports/<uuid:id>" in route:
        params["id"] = a_export(world).public_id
    elif "billing/topup/<uuid:id>" in route:
        params["id"] = a_topup(world)
    if "members/<int:pk>" in route:
        membership = world.a.org.memberships.filter(user=world.a_member).first()
        params["pk"] = membership.pk if membership else 987654321  # gone in the leak self-test
    elif "invitations/" in route:
        params["pk"] = world.a_invitation.pk
    elif "accounts/" in route:
        params["pk"] = world.a_pool.pk
    return params


def page_probes(route: str, only: str | None = None) -> dict[str, list[Probe]]:
    """GET and POST as B's owner: in A's organization, 404; in B's own, a page naming one of
    A's objects is 404 too (a page of B's without parameters is B's own business). A method the
    page does not take (`only` names the one it takes) is 405 or 404, whichever the view checks
    first: neither tells anything of A."""

    def probes(status) -> list[Probe]:
        out = [Probe(status, path=lambda w: _page_params(w, route, w.a.org.slug), markers=False)]
        if re.search(r"<(?!slug:org)", route):
            out.append(
                Probe(status, path=lambda w: _page_params(w, route, w.b.org.slug), markers=False)
            )
        return out

    return {m: probes(404 if only in (None, m) else (404, 405)) for m in ("GET", "POST")}


A_TEAM = {"slug": lambda w: w.a_team.slug}
A_MEMBER = {"pk": lambda w: w.a.org.memberships.get(user=w.a_member).pk}
A_INVITATION = {"pk": lambda w: w.a_invitation.pk}
A_KEY = {"hash": lambda w: w.a_key.hash}
# Holds by their public id (B reuses A's client id for a hold of its own: see the POST probe).
A_HOLD = {"id": lambda w: w.a_hold.public_id}
A_ENDPOINT = {"id": lambda w: a_endpoint(w).public_id}
A_UPSTREAM = {"id": lambda w: a_upstream(w).public_id}
A_DELIVERY = {**A_ENDPOINT, "message_id": lambda w: a_message(w).message_id}
A_BUDGET = {"id": lambda w: Budget.objects.filter(organization=w.a.org).order_by("id")[0].public_id}


def a_guardrail(world: World):
    """A's guardrail's public id (a stand-in once deleted, as in the leak self-test)."""
    found = Guardrail.objects.filter(organization=world.a.org).order_by("id").first()
    return found.public_id if found else "00000000-0000-4000-8000-000000000000"


def b_guardrail(world: World) -> dict:
    """B's own guardrail (made on first use), to name A's keys and members in."""
    found = Guardrail.objects.filter(organization=world.b.org).order_by("id").first()
    if found is None:
        found = guardrail_create(organization=world.b.org, fields={"name": "B's"}, actor=SYSTEM)
    return {"id": found.public_id}


A_GUARDRAIL = {"id": a_guardrail}


def _params(spec: dict[str, Fill]) -> Fill:
    return lambda w: {name: fill(w) for name, fill in spec.items()}


# route (as in the URL conf) -> {method: [probes]}. Every API method the view implements, every
# schema operation, and GET and POST on every page must be here.
# fmt: off
ROUTES: dict[str, dict[str, list[Probe]]] = {
    "api/v1/organization": {
        "GET": [Probe(200, check=own_org)],
        "PATCH": [Probe(200, body=lambda w: {"name": "Globex renamed"}, check=own_org)],
    },
    "api/v1/teams": {
        "GET": [Probe(200)],
        "POST": [Probe(201, body=lambda w: {"slug": "globex-new", "name": "New"})],
    },
    "api/v1/teams/<slug:slug>": {
        "GET": [Probe(404, path=_params(A_TEAM))],
        "PATCH": [Probe(404, path=_params(A_TEAM), body=lambda w: {"name": "Taken"})],
    },
    "api/v1/teams/<slug:slug>/members": {
        "POST": [
            Probe(404, path=_params(A_TEAM), body=lambda w: {"email": w.b.owner.email}),
            # B's own team, A's member: not a member of B
            Probe(404, path=lambda w: {"slug": w.b.team.slug},
                  body=lambda w: {"email": w.a_member.email}),
        ],
    },
    "api/v1/teams/<slug:slug>/members/<int:pk>": {
        "DELETE": [
            Probe(404, path=_params({**A_TEAM, **A_MEMBER})),
            # B's own team, A's member
            Probe(404, path=lambda w: {"slug": w.b.team.slug, "pk": A_MEMBER["pk"](w)}),
        ],
    },
    "api/v1/members": {
        "GET": [Probe(200, check=no_ids_of(Membership)),
                Probe(200, query=lambda w: {"role": "member"})],
    },
    "api/v1/members/<int:pk>": {
        "GET": [Probe(404, path=_params(A_MEMBER))],
        "PATCH": [Probe(404, path=_params(A_MEMBER), body=lambda w: {"role": "owner"})],
        "DELETE": [Probe(404, path=_params(A_MEMBER))],
    },
    "api/v1/invitations": {
        "GET": [Probe(200)],
        "POST": [Probe(404, body=lambda w: {"email": "new@globex.test", "team": w.a_team.slug})],
    },
    "api/v1/invitations/<int:pk>": {
        "GET": [Probe(404, path=_params(A_INVITATION))],
        "DELETE": [Probe(404, path=_params(A_INVITATION))],
    },
    "api/v1/keys": {
        "GET": [Probe(200, query=lambda w: {"include_disabled": "true", "include_expired": "1"})],
        "POST": [Probe(404, body=lambda w: {"name": "x", "team": w.a_team.slug}),
                 Probe(404, body=lambda w: {"name": "x", "member": w.a_member.email})],
    },
    "api/v1/keys/<str:hash>": {
        "GET": [Probe(404, path=_params(A_KEY))],
        "PATCH": [Probe(404, path=_params(A_KEY), body=lambda w: {"disabled": True})],
        "DELETE": [Probe(404, path=_params(A_KEY))],
    },
    "api/v1/key": {
        "GET": [Probe(200, check=expect(lambda w, r: r.json()["data"]["hash"] == w.b_key.hash))],
    },
    "api/v1/credits": {"GET": [Probe(200, check=b_totals)]},
    "api/v1/generation": {
        "GET": [Probe(404, query=lambda w: {"id": w.a_event.event_id}, markers=False)],
    },
    "api/v1/audit-events": {
        "GET": [Probe(200, check=no_ids_of(AuditEvent)),
                Probe(200, query=lambda w: {"action": "credits.granted"},
                      check=no_ids_of(AuditEvent))],
    },
    "api/v1/credits/balance": {"GET": [Probe(200, check=b_totals)]},
    "api/v1/credits/accounts": {"GET": [Probe(200, check=no_ids_of(LedgerAccount))]},
    "api/v1/credits/accounts/<int:pk>": {
        "GET": [Probe(404, path=lambda w: {"pk": w.a_pool.pk})],
        "PATCH": [Probe(404, path=lambda w: {"pk": w.a_pool.pk},
                        body=lambda w: {"low_balance": "1"})],
    },
    "api/v1/credits/accounts/<int:pk>/entries": {
        "GET": [Probe(404, path=lambda w: {"pk": w.a_pool.pk})],
    },
    "api/v1/credits/lots": {
        "GET": [Probe(200, check=no_ids_of(CreditLot)),
                Probe(200, query=lambda w: {"account": w.a_pool.pk}, check=empty)],
    },
    "api/v1/credits/allocations": {
        "POST": [Probe(404, body=lambda w: {"team": w.a_team.slug, "amount": "1"})],
    },
    "api/v1/credits/usage": {
        "GET": [Probe(200),
                Probe(200, query=lambda w: {"key": w.a_usage_key.hash}, check=empty),
                Probe(200, query=lambda w: {"team": w.a_team.slug}, check=empty)],
        # A's event id, same body: B records its own event (ids are per organization), and is
        # never answered with A's first result
        "POST": [Probe(201, markers=False, check=fresh_in_b(UsageEvent, "event_id"),
                       body=lambda w: {"id": w.a_event.event_id, "model": "gpt-4o",
                                       "prompt_tokens": 1000, "completion_tokens": 100})],
    },
    "api/v1/credits/authorizations": {
        "POST": [Probe(201, markers=False, check=fresh_in_b(Hold, "idempotency_key"),
                       body=lambda w: {"id": w.a_hold.idempotency_key, "amount": "1.5"})],
    },
    "api/v1/credits/authorizations/<str:id>/capture": {
        "POST": [Probe(404, path=_params(A_HOLD),
                       body=lambda w: {"model": "gpt-4o", "prompt_tokens": 10})],
    },
    "api/v1/credits/authorizations/<str:id>/void": {
        "POST": [Probe(404, path=_params(A_HOLD))],
    },
    # Budgets: B lists its own; A's team, member or key named in B's budget is a bad input.
    "api/v1/budgets": {
        "GET": [Probe(200)],
        "POST": [Probe(400, body=lambda w: {"scope": "team", "team": w.a_team.slug,
                                            "period": "daily", "limit": "1"}),
                 Probe(400, body=lambda w: {"scope": "member", "member": w.a_member.email,
                                            "period": "daily", "limit": "1"}),
                 Probe(400, body=lambda w: {"scope": "api_key", "api_key": w.a_key.hash,
                                            "period": "daily", "limit": "1"})],
    },
    "api/v1/budgets/<uuid:id>": {
        "GET": [Probe(404, path=_params(A_BUDGET))],
        "PATCH": [Probe(404, path=_params(A_BUDGET), body=lambda w: {"limit": "99"})],
        "DELETE": [Probe(404, path=_params(A_BUDGET))],
    },
    # Alerts: B lists its own (none); A's alert is 404.
    "api/v1/alerts": {"GET": [Probe(200, check=empty)]},
    "api/v1/alerts/<uuid:id>/acknowledge": {
        "POST": [Probe(404, path=lambda w: {"id": a_alert(w).public_id})],
    },
    # Guardrails: B lists its own; A's key or member named in B's guardrail is a bad input.
    "api/v1/guardrails": {
        "GET": [Probe(200, check=empty_data)],
        "POST": [Probe(201, body=lambda w: {"name": "Globex guardrail", "limit_usd": 1})],
    },
    "api/v1/guardrails/assignments/keys": {"GET": [Probe(200, check=empty_data)]},
    "api/v1/guardrails/assignments/members": {"GET": [Probe(200, check=empty_data)]},
    "api/v1/guardrails/<uuid:id>": {
        "GET": [Probe(404, path=_params(A_GUARDRAIL))],
        "PATCH": [Probe(404, path=_params(A_GUARDRAIL), body=lambda w: {"limit_usd": 99})],
        "DELETE": [Probe(404, path=_params(A_GUARDRAIL))],
    },
    "api/v1/guardrails/<uuid:id>/assignments/keys": {
        "GET": [Probe(404, path=_params(A_GUARDRAIL))],
        "POST": [Probe(404, path=_params(A_GUARDRAIL),
                       body=lambda w: {"key_hashes": [w.b_key.hash]}),
                 Probe(400, path=b_guardrail,
                       body=lambda w: {"key_hashes": [w.a_usage_key.hash]})],
    },
    "api/v1/guardrails/<uuid:id>/assignments/keys/remove": {
        "POST": [Probe(404, path=_params(A_GUARDRAIL),
                       body=lambda w: {"key_hashes": [w.b_key.hash]}),
                 Probe(400, path=b_guardrail,
                       body=lambda w: {"key_hashes": [w.a_usage_key.hash]})],
    },
    "api/v1/guardrails/<uuid:id>/assignments/members": {
        "GET": [Probe(404, path=_params(A_GUARDRAIL))],
        "POST": [Probe(404, path=_params(A_GUARDRAIL),
                       body=lambda w: {"member_user_ids": [str(w.b.owner.pk)]}),
                 Probe(400, path=b_guardrail,
                       body=lambda w: {"member_user_ids": [str(w.a_member.pk)]})],
    },
    "api/v1/guardrails/<uuid:id>/assignments/members/remove": {
        "POST": [Probe(404, path=_params(A_GUARDRAIL),
                       body=lambda w: {"member_user_ids": [str(w.b.owner.pk)]}),
                 Probe(400, path=b_guardrail,
                       body=lambda w: {"member_user_ids": [str(w.a_member.pk)]})],
    },
    "api/v1/credits/report": {
        "GET": [Probe(200, check=b_report),
                Probe(200, query=lambda w: {"format": "csv", "period": "monthly"})],
    },
    "api/v1/credits/forecast": {"GET": [Probe(200, check=b_forecast)]},
    "api/v1/invitations/<int:pk>/resend": {"POST": [Probe(404, path=_params(A_INVITATION))]},
    "api/v1/activity": {
        "GET": [Probe(200, check=b_activity),
                Probe(200, query=lambda w: {"api_key_hash": w.a_usage_key.hash}, check=empty_data)],
    },
    "api/v1/organization/members": {"GET": [Probe(200, check=only_b_members)]},
    # Notifications are the caller's own (B's management key acts for no member: none, 403 to
    # write); webhooks the organization's.
    "api/v1/notifications": {"GET": [Probe(200, check=empty)]},
    "api/v1/notifications/<str:id>/read": {
        "POST": [Probe(404, path=lambda w: {"id": a_notification(w).public_id})],
    },
    "api/v1/notifications/read-all": {"POST": [Probe(403)]},
    "api/v1/notification-preferences": {
        "GET": [Probe(403)],
        "PUT": [Probe(403, body=lambda w: {"preferences": {"balance.low": {"email": False}}})],
    },
    "api/v1/webhooks": {
        "GET": [Probe(200, check=empty_data)],
        "POST": [Probe(201, body=lambda w: {"url": "https://hooks.globex.test/in",
                                            "events": ["balance.low"]})],
    },
    "api/v1/webhooks/<str:id>": {
        "GET": [Probe(404, path=_params(A_ENDPOINT))],
        "PATCH": [Probe(404, path=_params(A_ENDPOINT), body=lambda w: {"enabled": False})],
        "DELETE": [Probe(404, path=_params(A_ENDPOINT))],
    },
    "api/v1/webhooks/<str:id>/rotate-secret": {"POST": [Probe(404, path=_params(A_ENDPOINT))]},
    "api/v1/webhooks/<str:id>/test": {"POST": [Probe(404, path=_params(A_ENDPOINT))]},
    "api/v1/webhooks/<str:id>/deliveries": {"GET": [Probe(404, path=_params(A_ENDPOINT))]},
    "api/v1/webhooks/<str:id>/deliveries/<str:message_id>/resend": {
        "POST": [Probe(404, path=_params(A_DELIVERY))],
    },
    # The OpenRouter connection is the caller's organization's: B has none (404) until it sets
    # its own; B's sync and snapshots are B's (A's key and snapshots never show).
    "api/v1/billing/openrouter": {
        "GET": [Probe(404)],
        "DELETE": [Probe(404)],
        "PUT": [Probe(201, body=lambda w: {"key": "sk-or-v1-" + "b0b0" * 16})],
    },
    "api/v1/billing/openrouter/sync": {
        "POST": [Probe(201, check=expect(lambda w, r: r.json()["status"] == "error"))],
    },
    "api/v1/billing/openrouter/snapshots": {"GET": [Probe(200, check=only_b_snapshots)]},
    # Purchases: B buys for itself, lists its own orders, and A's order is 404; a webhook
    # naming A's order without a signature is refused and changes nothing.
    "api/v1/credits/purchase": {
        "POST": [Probe(201, body=lambda w: {"amount": "10.00", "provider": "manual"})],
    },
    "api/v1/billing/orders": {"GET": [Probe(200, check=b_orders_only)]},
    "api/v1/billing/orders/<uuid:id>": {"GET": [Probe(404, path=lambda w: {"id": a_order(w)})]},
    "api/v1/billing/webhooks/stripe": {
        "POST": [Probe(400, body=lambda w: {
            "id": "evt_b", "type": "checkout.session.completed",
            "data": {"object": {"payment_status": "paid", "amount_total": 1000,
                                "currency": "usd", "metadata": {"order_id": a_order(w)}}}})],
    },
    "api/v1/billing/webhooks/coinbase": {
        "POST": [Probe(400, body=lambda w: {"event": {
            "id": "e-b", "type": "charge:confirmed",
            "data": {"metadata": {"order_id": a_order(w)},
                     "pricing": {"local": {"amount": "10.00", "currency": "USD"}}}}})],
    },
    # Billing documents: B lists its own; A's numbers and ids answer 404.
    "api/v1/billing/invoices": {"GET": [Probe(200, check=empty)]},
    "api/v1/billing/invoices/<str:number>": {
        "GET": [Probe(404, path=lambda w: {"number": a_invoice(w)})],
    },
    "api/v1/billing/invoices/<str:number>/pdf": {
        "GET": [Probe(404, path=lambda w: {"number": a_invoice(w)})],
    },
    "api/v1/billing/credit-notes": {"GET": [Probe(200, check=empty)]},
    "api/v1/billing/credit-notes/<str:number>": {
        "GET": [Probe(404, path=lambda w: {"number": a_credit_note(w)})],
    },
    "api/v1/billing/credit-notes/<str:number>/pdf": {
        "GET": [Probe(404, path=lambda w: {"number": a_credit_note(w)})],
    },
    "api/v1/billing/statements": {
        "GET": [Probe(200, check=empty)],
        # B's own month, before B existed: refused, and nothing of A's generated.
        "POST": [Probe(400, body=lambda w: {"year": 2025, "month": 1})],
    },
    "api/v1/billing/statements/<str:id>": {
        "GET": [Probe(404, path=lambda w: {"id": a_statement(w)})],
    },
    "api/v1/billing/statements/<str:id>/pdf": {
        "GET": [Probe(404, path=lambda w: {"id": a_statement(w)})],
    },
    "api/v1/billing/profile": {
        "GET": [Probe(200, check=expect(lambda w, r: r.json()["number_prefix"] == "GLOBEX"))],
        "PATCH": [Probe(200, body=lambda w: {"tax_rate": "3"},
                        check=expect(lambda w, r: r.json()["tax_rate"] == "3.00"))],
    },
    # Exports: B's own rows only; A's members, keys, accounts are unknown filters (400); A's
    # jobs are 404.
    "api/v1/billing/exports": {
        "GET": [Probe(200, check=empty)],
        "POST": [Probe(201, body=lambda w: {"kind": "usage", "format": "csv"}),
                 Probe(400, body=lambda w: {"kind": "usage", "format": "csv",
                                            "filters": {"member": w.a_member.email}}),
                 Probe(400, body=lambda w: {"kind": "ledger", "format": "csv",
                                            "filters": {"account": w.a_pool.pk}})],
    },
    "api/v1/billing/exports/usage.<str:fmt>": {
        # Up to A's event (later, B records an event of its own under A's event id).
        "GET": [Probe(200, path=lambda w: {"fmt": "csv"}, query=until_a_event),
                Probe(200, path=lambda w: {"fmt": "json"},
                      query=lambda w: {"team": w.a_team.slug}),
                Probe(400, path=lambda w: {"fmt": "focus.csv"},
                      query=lambda w: {"key": w.a_usage_key.hash})],
    },
    "api/v1/billing/exports/ledger.<str:fmt>": {
        "GET": [Probe(200, path=lambda w: {"fmt": "csv"}),
                Probe(400, path=lambda w: {"fmt": "json"},
                      query=lambda w: {"account": w.a_pool.pk})],
    },
    "api/v1/billing/exports/<uuid:id>": {
        "GET": [Probe(404, path=lambda w: {"id": a_export(w).public_id})],
    },
    "api/v1/billing/exports/<uuid:id>/download": {
        "GET": [Probe(404, path=lambda w: {"id": a_export(w).public_id})],
    },
    # Automatic top-up: B reads and sets its own rule; A's top-ups are not among B's; a card
    # session id B does not own is refused (here before Stripe is asked).
    "api/v1/billing/topup": {
        "GET": [Probe(200, check=b_topup_rule)],
        "PUT": [Probe(200, check=b_topup_rule, body=lambda w: {
            "enabled": False, "threshold": "10", "amount": "20", "monthly_cap": "100"})],
    },
    "api/v1/billing/topup/payment-method": {
        "POST": [Probe(400, body=lambda w: {"session_id": "not-a-session"})],
    },
    "api/v1/billing/topup/attempts": {"GET": [Probe(200, check=empty)]},
    # The gateway: B's upstreams only; a model only A's upstream serves is not B's (400, nothing
    # held, A's upstream never called); the models list is B's (its upstream made above serves
    # `openai/`; A's serves `gpt-4o`, which B must not see).
    "api/v1/upstreams": {
        "GET": [Probe(200, check=empty_data)],
        "POST": [Probe(201, body=lambda w: {"name": "Globex", "kind": "openrouter",
                                            "base_url": "https://openrouter.globex.test/api/v1",
                                            "models": ["openai/"]})],
    },
    "api/v1/upstreams/<str:id>": {
        "GET": [Probe(404, path=_params(A_UPSTREAM))],
        "PATCH": [Probe(404, path=_params(A_UPSTREAM), body=lambda w: {"enabled": False})],
        "DELETE": [Probe(404, path=_params(A_UPSTREAM))],
    },
    "api/v1/chat/completions": {
        "POST": [Probe(400, body=lambda w: {"model": "gpt-4o", "max_tokens": 10,
                                            "messages": [{"role": "user", "content": "hi"}]})],
    },
    "api/v1/models": {
        "GET": [Probe(200, check=expect(lambda w, r: r.json()["data"] and all(
            m["id"].startswith("openai/") for m in r.json()["data"])))],
    },
    # Pages, as B's owner (logged in)
    "": {"GET": [Probe(302, check=to_b_dashboard)], "POST": [Probe(302, check=to_b_dashboard)]},
    "o/<slug:org>/": {
        "GET": [Probe(404, path=lambda w: {"org": w.a.org.slug}, markers=False)],
        "POST": [Probe(404, path=lambda w: {"org": w.a.org.slug}, markers=False)],
    },
    # The signed token is the credential; a tampered one is 404, and B's owner cannot accept
    # an invitation addressed to someone else (no membership in A: checked by the snapshot).
    "invitations/<str:token>/": {
        "GET": [Probe(404, path=lambda w: {"token": w.a_invitation_token[:-3] + "xyz"},
                      markers=False)],
        "POST": [Probe(200, path=lambda w: {"token": w.a_invitation_token}, markers=False,
                       body=lambda w: {"name": "B owner"})],
    },
    # Organization pages: A's organization answers 404 to B's owner, and B's own pages never
    # reach A's objects (teams, keys, members, invitations, accounts by A's ids).
    **{route: page_probes(route) for route in (
        "o/<slug:org>/teams/", "o/<slug:org>/teams/new/", "o/<slug:org>/teams/<slug:slug>/",
        "o/<slug:org>/teams/<slug:slug>/edit/",
        "o/<slug:org>/teams/<slug:slug>/members/<int:pk>/remove/",
        "o/<slug:org>/members/", "o/<slug:org>/members/invite/",
        "o/<slug:org>/members/<int:pk>/remove/", "o/<slug:org>/invitations/<int:pk>/revoke/",
        "o/<slug:org>/keys/", "o/<slug:org>/keys/new/", "o/<slug:org>/keys/<str:hash>/",
        "o/<slug:org>/keys/<str:hash>/created/", "o/<slug:org>/keys/<str:hash>/delete/",
        "o/<slug:org>/audit/", "o/<slug:org>/settings/", "o/<slug:org>/billing/topup/",
        "o/<slug:org>/notifications/preferences/", "o/<slug:org>/webhooks/new/",
        "o/<slug:org>/webhooks/<str:id>/", "o/<slug:org>/webhooks/<str:id>/rotate/",
        "o/<slug:org>/webhooks/<str:id>/delete/",
        "o/<slug:org>/upstreams/new/", "o/<slug:org>/upstreams/<uuid:id>/",
        "o/<slug:org>/upstreams/<uuid:id>/delete/",
        "o/<slug:org>/budgets/", "o/<slug:org>/budgets/<uuid:id>/edit/",
        "o/<slug:org>/budgets/<uuid:id>/delete/",
        "o/<slug:org>/billing/openrouter/connection/",
        "o/<slug:org>/billing/openrouter/disconnect/",
        "o/<slug:org>/billing/buy/", "o/<slug:org>/billing/orders/<uuid:id>/confirm/",
        "o/<slug:org>/billing/statements/", "o/<slug:org>/billing/settings/",
        "o/<slug:org>/budgets/<uuid:id>/delete/", "o/<slug:org>/billing/exports/",
        "o/<slug:org>/billing/topup/<uuid:id>/reject/",
    )},
    **{route: page_probes(route, only="POST") for route in (
        "o/<slug:org>/teams/<slug:slug>/members/",
        "o/<slug:org>/teams/<slug:slug>/members/<int:pk>/role/",
        "o/<slug:org>/teams/<slug:slug>/allocate/", "o/<slug:org>/members/<int:pk>/role/",
        "o/<slug:org>/invitations/<int:pk>/resend/", "o/<slug:org>/keys/<str:hash>/toggle/",
        "o/<slug:org>/notifications/read-all/", "o/<slug:org>/notifications/<str:id>/read/",
        "o/<slug:org>/webhooks/<str:id>/test/",
        "o/<slug:org>/webhooks/<str:id>/deliveries/<str:message_id>/resend/",
        "o/<slug:org>/budgets/alerts/<uuid:id>/acknowledge/",
        "o/<slug:org>/billing/openrouter/sync/",
        "o/<slug:org>/billing/topup/card/", "o/<slug:org>/billing/topup/<uuid:id>/approve/",
    )},
    **{route: page_probes(route, only="GET") for route in (
        "o/<slug:org>/team-balances/", "o/<slug:org>/balance/", "o/<slug:org>/usage/",
        "o/<slug:org>/dashboard/conversations/",
        "o/<slug:org>/usage/export.csv", "o/<slug:org>/ledger/",
        "o/<slug:org>/ledger/accounts/<int:pk>/", "o/<slug:org>/me/",
        "o/<slug:org>/notifications/", "o/<slug:org>/notifications/bell/",
        "o/<slug:org>/webhooks/", "o/<slug:org>/webhooks/<str:id>/secret/",
        "o/<slug:org>/upstreams/",
        "o/<slug:org>/webhooks/<str:id>/deliveries/",
        "o/<slug:org>/billing/openrouter/",
        "o/<slug:org>/billing/orders/", "o/<slug:org>/billing/orders/<uuid:id>/",
        "o/<slug:org>/billing/invoices/", "o/<slug:org>/billing/invoices/<str:number>/pdf/",
        "o/<slug:org>/billing/credit-notes/<str:number>/pdf/",
        "o/<slug:org>/billing/statements/<uuid:id>/pdf/",
        "o/<slug:org>/webhooks/<str:id>/deliveries/", "o/<slug:org>/billing/exports/jobs/",
        "o/<slug:org>/billing/exports/<uuid:id>/download/",
    )},
}
# fmt: on
EXEMPT: dict[str, str] = {
    "login/": "authentication form, no tenant data",
    "logout/": "ends the session, no tenant data",
    "password-reset/": "e-mails a link to an address; answers the same for every address",
    "password-reset/done/": "static confirmation page",
    "reset/<uidb64>/<token>/": "the signed token is the credential; no tenant data",
    "reset/done/": "static confirmation page",
    "api/v1/schema/": "the OpenAPI document, the same for everyone",
    "api/v1/schema/swagger/": "the Swagger UI page, the same for everyone",
    "healthz": "operators: liveness, no data (tests/test_operations.py)",
    "readyz": "operators: readiness of the database, cache and migrations, no tenant data",
    "metrics": "operators: Prometheus totals of the installation, behind METRICS_TOKEN",
}
EXEMPT_PREFIXES: dict[str, str] = {
    "admin/": "Django admin: operators of the installation (staff) only, not tenants",
}


def _exempt(route: str) -> bool:
    return route in EXEMPT or any(route.startswith(p) for p in EXEMPT_PREFIXES)


# Tests -------------------------------------------------------------------------------------------


def test_every_route_is_in_the_table():
    """A route or operation missing from ROUTES/EXEMPT fails here, by name."""
    missing = []
    by_shape = {shape(r): r for r in ROUTES}
    routes = url_routes()
    for url in routes:
        if _exempt(url.route):
            continue
        if url.route not in ROUTES:
            view = url.view_class or url.callback
            missing.append(
                f"URL conf route {url.route!r} ({view.__module__}.{view.__name__}) "
                "is in neither ROUTES nor EXEMPT"
            )
            continue
        for method in url.api_methods - set(ROUTES[url.route]):
            missing.append(f"{method} {url.route!r}: no probe in ROUTES")
        if not url.api_methods:  # a page: GET and POST
            missing += [f"{m} page {url.route!r}: no probe" for m in ("GET", "POST")
                        if m not in ROUTES[url.route]]  # fmt: skip
    for path, methods in schema_operations().items():
        route = by_shape.get(shape(path))
        if route is None:
            if not _exempt(path.lstrip("/")):
                missing.append(f"schema path {path!r} is in neither ROUTES nor EXEMPT")
            continue
        missing += [f"{m} {path} (schema): no probe in ROUTES[{route!r}]"
                    for m in methods - set(ROUTES[route])]  # fmt: skip
    stale = set(ROUTES) - {u.route for u in routes}
    missing += [f"ROUTES names {r!r}, which is no longer in the URL conf" for r in sorted(stale)]
    assert not missing, "Add to ROUTES (or EXEMPT, with a reason):\n" + "\n".join(missing)
    unfilled = [r for r, ms in ROUTES.items() for ps in ms.values() for p in ps
                if "<" in r and p.path is None]  # fmt: skip
    assert not unfilled, f"probes of routes with parameters must fill them: {unfilled}"


def _url(route: str, params: dict[str, Any]) -> str:
    def fill(match: re.Match) -> str:
        return str(params[match.group(1).split(":")[-1]])

    return "/" + re.sub(r"<([^>]+)>", fill, route)


def _send(world: World, route: str, method: str, probe: Probe) -> tuple[Any, list[str]]:
    """B's request; returns the response and the strings B sent."""
    url = _url(route, probe.path(world) if probe.path else {})
    query = probe.query(world) if probe.query else {}
    body = probe.body(world) if probe.body else None
    sent = [url, *map(str, query.values()), *map(str, (body or {}).values())]
    if route.startswith("api/"):
        client = world.b_api
        if method == "GET":
            return client.get(url, query), sent
        return client.generic(
            method,
            url,
            json.dumps(body) if body is not None else "",
            content_type="application/json",
        ), sent
    if method == "GET":
        return world.b_page.get(url, query), sent
    return world.b_page.post(url, body or {}), sent


def _without_echo(text: str, sent: list[str]) -> str:
    """The response without what B itself sent (an error may quote B's own input, e.g. "No
    team 'x'"): what is left must hold none of A's identifiers."""
    sent = sent + [part for s in sent for part in s.split("/") if part]
    for value in sorted(set(sent), key=len, reverse=True):
        text = text.replace(value, "")
    return text


def run_probes(world: World) -> list[str]:
    """Send every probe of ROUTES as B; returns what went wrong, one line per failure."""
    before, markers, failures = snapshot(world.a.org), world.markers(), []
    for route, methods in ROUTES.items():
        for method, probes in methods.items():
            for i, probe in enumerate(probes):
                where = f"{method} /{route} [probe {i}]"
                response, sent = _send(world, route, method, probe)
                body = (
                    b"".join(response.streaming_content) if response.streaming else response.content
                )
                text = body.decode(errors="replace")
                expected = probe.status if isinstance(probe.status, tuple) else (probe.status,)
                if response.status_code not in expected:
                    failures.append(f"{where}: {response.status_code}, expected {probe.status}: "
                                    f"{text[:300]}")  # fmt: skip
                else:
                    shown = _without_echo(text, sent)
                    errors = _check(world, route, probe, response, shown, markers)
                    failures += [f"{where}: {e}" for e in errors]
                after = snapshot(world.a.org)
                if after != before:
                    changed = [m for m in after if after[m] != before.get(m)]
                    failures.append(f"{where}: changed A's {changed}")
                    before = after
    return failures


def _check(world: World, route: str, probe: Probe, response, shown: str, markers) -> list[str]:
    errors = []
    if probe.markers and (leaked := [m for m in markers if m.lower() in shown.lower()]):
        errors.append(f"shows A's {sorted(leaked)}")
    if probe.status == 404 and route.startswith("api/"):
        error = response.json().get("error", {})
        if error.get("code") != 404 or "type" not in error.get("metadata", {}):
            errors.append(f"404 not in the error format: {response.content[:200]!r}")
    try:
        if probe.check:
            probe.check(world, response)
    except (AssertionError, KeyError) as exc:
        errors.append(f"{type(exc).__name__} {exc}: {response.content[:300]!r}")
    return errors


ONE_OF_EVERYTHING = ("accounts.Team", "accounts.Membership", "accounts.Invitation",
                     "accounts.ApiKey", "accounts.AuditEvent", "accounts.TeamMembership",
                     "credits.CreditLot", "credits.UsageEvent", "credits.Hold")  # fmt: skip


def test_organization_b_sees_and_changes_nothing_of_a(tenant, other_tenant, prices):
    world = build_world(tenant, other_tenant)
    before = snapshot(world.a.org)
    assert all(before[m] for m in ONE_OF_EVERYTHING), "A must have one of everything"
    failures = run_probes(world)
    assert not failures, "\n".join(failures)


def test_the_probes_catch_a_leak(tenant, other_tenant, prices):
    """The harness can fail: sent with A's own key and session (as if tenancy were lost), the
    probes report the objects B would have seen, the 404s that were not, and A's rows changed."""
    world = build_world(tenant, other_tenant)
    _, a_secret = world.a.key("management")
    page = Client()
    page.force_login(world.a.owner)
    failures = "\n".join(run_probes(replace(world, b_api=world.a.client(a_secret), b_page=page)))
    for expected in (
        "GET /api/v1/teams/<slug:slug> [probe 0]: 200, expected 404",
        "GET /api/v1/keys/<str:hash> [probe 0]: 200, expected 404",
        "GET /api/v1/generation [probe 0]: 200, expected 404",
        "GET /o/<slug:org>/ [probe 0]: 200, expected 404",
        "GET /api/v1/credits/usage [probe 0]: shows A's",
        "GET /api/v1/audit-events [probe 0]: shows A's",
        "GET /api/v1/credits/balance [probe 0]: AssertionError",
        "DELETE /api/v1/members/<int:pk> [probe 0]: changed A's",
        "PATCH /api/v1/keys/<str:hash> [probe 0]: changed A's ['accounts.ApiKey'",
    ):
        assert expected in failures, f"{expected!r} not in:\n{failures}"


def test_api_404_does_not_tell_foreign_from_missing(tenant, other_tenant, prices):
    """A's object and an id that exists nowhere answer the same body: no existence leak."""
    w = build_world(tenant, other_tenant)
    member = w.a.org.memberships.get(user=w.a_member).pk
    nowhere = 987654321
    pairs = [
        ("get", f"/api/v1/teams/{w.a_team.slug}", "/api/v1/teams/no-such-team-x"),
        ("get", f"/api/v1/keys/{w.a_key.hash}", "/api/v1/keys/" + "0" * 64),
        ("get", f"/api/v1/members/{member}", f"/api/v1/members/{nowhere}"),
        ("get", f"/api/v1/invitations/{w.a_invitation.pk}", f"/api/v1/invitations/{nowhere}"),
        ("post", f"/api/v1/credits/authorizations/{w.a_hold.public_id}/void",
         f"/api/v1/credits/authorizations/{nowhere}/void"),
    ]  # fmt: skip
    quoted = re.compile(r"'[^']*'")
    for method, foreign, missing in pairs:
        a, b = (getattr(w.b_api, method)(path).json()["error"] for path in (foreign, missing))
        assert a["code"] == b["code"] == 404
        assert quoted.sub("", a["message"]) == quoted.sub("", b["message"])
        assert a["metadata"] == b["metadata"]
