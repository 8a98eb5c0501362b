"""The credits pages through Django's test client, per role: the dashboard, the header balance,
the usage explorer and its CSV export, the ledger, team allocation and the member's own page.

What a role cannot read over the API, its pages do not show: a viewer's pages name no other
member, a member's pages show only their own rows."""

from __future__ import annotations

import csv
import io
import types
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey, AuditEvent, TeamMembership, User
from accounts.roles import Role
from accounts.services import apikey_create, team_create
from credits.models import LedgerAccount, LedgerEntry, UsageEvent
from credits.services import Attribution, UsageInput, usage_record

from ..conftest import SYSTEM, Tenant

pytestmark = pytest.mark.django_db

ROLES = (Role.OWNER, Role.ADMIN, Role.BILLING, Role.MEMBER, Role.VIEWER)


def spend(key: ApiKey, event_id: str, cost: str, *, hours_ago: float = 0, **fields) -> UsageEvent:
    return usage_record(
        attribution=Attribution.of_key(key),
        event=UsageInput(
            id=event_id,
            model=fields.pop("model", "openai/gpt-4o"),
            cost=Decimal(cost),
            prompt_tokens=fields.pop("prompt_tokens", 1000),
            completion_tokens=fields.pop("completion_tokens", 100),
            occurred_at=timezone.now() - timedelta(hours=hours_ago),
            **fields,
        ),
    ).event


@dataclass
class Org:
    tenant: Tenant
    users: dict[str, User]
    member_key: ApiKey
    other_key: ApiKey
    other: User  # another member, on the same team

    def client(self, role: str) -> Client:
        client = Client()
        client.force_login(self.users[role])
        return client

    def url(self, name: str, **kwargs) -> str:
        return reverse(name, kwargs={"org": self.tenant.org.slug, **kwargs})


def _key(tenant: Tenant, name: str, user: User | None = None) -> ApiKey:
    key, _ = apikey_create(
        organization=tenant.org, name=name, kind="usage", team=tenant.team, user=user, actor=SYSTEM
    )
    return key


@pytest.fixture
def org(tenant) -> Org:
    """Acme: 500 credits, 200 of them allocated to Research; a member and another member on
    Research, each with a usage key named after them; usage by both and by a team key."""
    tenant.grant("500")
    tenant.allocate("200")
    users = {Role.OWNER: tenant.owner}
    for role in ROLES[1:]:
        users[role] = tenant.member(role, email=f"{role}@acme.test")
    other = tenant.member(Role.MEMBER, email="secret-colleague@acme.test")
    for user in (users[Role.MEMBER], other):
        TeamMembership.objects.create(team=tenant.team, user=user)
    member_key = _key(tenant, "mine", user=users[Role.MEMBER])
    other_key = _key(tenant, "colleague-key", user=other)
    team_key = _key(tenant, "team-key")
    spend(member_key, "m1", "1.25", hours_ago=1, conversation_id="conv-a")
    spend(member_key, "m2", "0.75", hours_ago=30, model="openai/gpt-4o-mini")
    spend(other_key, "o1", "4.00", hours_ago=2, conversation_id="conv-b")
    spend(team_key, "t1", "2.00", hours_ago=50, operation="embedding")
    return Org(tenant, users, member_key, other_key, other)


# Every page, every role ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "name", ["dashboard", "dashboard-conversations", "usage", "ledger", "me", "balance-widget"]
)
def test_each_page_opens_for_each_role(org, role, name):
    response = org.client(role).get(org.url(name))
    assert response.status_code == 200
    html = response.content.decode()
    if name not in ("balance-widget", "dashboard-conversations"):  # fragments
        assert html.count("<h1") == 1
    if role in (Role.MEMBER, Role.VIEWER):  # never another member's e-mail or key name
        assert "secret-colleague@acme.test" not in html
        assert "colleague-key" not in html


def test_non_members_get_404(org, other_tenant):
    client = Client()
    client.force_login(other_tenant.owner)
    for name in ("dashboard", "dashboard-conversations", "usage", "usage-export", "ledger", "me",
                 "balance-widget"):  # fmt: skip
        assert client.get(org.url(name)).status_code == 404


def test_owner_sees_every_identity(org):
    html = org.client(Role.OWNER).get(org.url("usage")).content.decode()
    assert "secret-colleague@acme.test" in html and "colleague-key" in html
    assert "mine" in html and "team-key" in html


def test_viewer_sees_figures_without_identities(org):
    client = org.client(Role.VIEWER)
    usage = client.get(org.url("usage"))
    assert [e.event_id for e in usage.context["rows"]] == ["m1", "o1", "m2", "t1"]
    assert all(e.key_label == "" and e.member_label == "" for e in usage.context["rows"])
    # The member filter names only the viewer themself; the key filter nobody.
    viewer = org.users[Role.VIEWER]
    assert usage.context["form"].fields["member"].choices[1:] == [(str(viewer.pk), viewer.email)]
    assert "key" not in usage.context["form"].fields
    dashboard = client.get(org.url("dashboard")).content.decode()
    assert "(other members)" in dashboard and "member@acme.test" not in dashboard


def test_the_dashboards_conversations_load_after_the_page_and_show_what_the_role_may_see(org):
    page = org.client(Role.OWNER).get(org.url("dashboard")).content.decode()
    assert org.url("dashboard-conversations") in page and "conv-a" not in page  # loaded by htmx
    owner = org.client(Role.OWNER).get(org.url("dashboard-conversations")).content.decode()
    assert owner.index("conv-b") < owner.index("conv-a")  # by cost: 4.00, then 1.25
    member = org.client(Role.MEMBER).get(org.url("dashboard-conversations")).content.decode()
    assert "conv-a" in member and "conv-b" not in member  # only the member's own usage


def test_member_usage_page_shows_only_their_rows(org):
    response = org.client(Role.MEMBER).get(org.url("usage"))
    assert [e.event_id for e in response.context["rows"]] == ["m1", "m2"]
    # Filtering for someone else's conversation finds nothing either.
    response = org.client(Role.MEMBER).get(org.url("usage"), {"conversation": "conv-b"})
    assert response.context["rows"] == []


# The header balance --------------------------------------------------------------------------


def test_balance_widget_follows_usage(org):
    client = org.client(Role.OWNER)
    assert "492.00" in client.get(org.url("balance-widget")).content.decode()  # 500 - 8
    spend(org.member_key, "m3", "1.00")
    assert "491.00" in client.get(org.url("balance-widget")).content.decode()
    # A member draws on Research only: 200 - 8.00 - 1.00.
    html = org.client(Role.MEMBER).get(org.url("balance-widget")).content.decode()
    assert "191.00" in html and "<h1" not in html


# The usage explorer ---------------------------------------------------------------------------


def test_usage_filters(org):
    client = org.client(Role.OWNER)

    def ids(**params):
        response = client.get(org.url("usage"), params)
        assert response.status_code == 200, response.content
        return [e.event_id for e in response.context["rows"]]

    assert ids(model="mini") == ["m2"]
    assert ids(operation="embedding") == ["t1"]
    assert ids(key=str(org.other_key.pk)) == ["o1"]
    assert ids(member=str(org.other.pk)) == ["o1"]
    assert ids(conversation="conv-a") == ["m1"]
    assert ids(team="research", min_cost="1.5") == ["o1", "t1"]
    assert ids(max_cost="1") == ["m2"]
    start = timezone.localtime(timezone.now() - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    assert ids(start=start) == ["m1", "o1"]
    assert ids(min_tokens="1100", max_tokens="1100") == ["m1", "o1", "m2", "t1"]
    assert ids(min_tokens="1101") == []


def test_usage_htmx_gets_the_fragment(org):
    response = org.client(Role.OWNER).get(
        org.url("usage"), {"model": "mini"}, headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="usage-results"' in html and "<h1" not in html and "<html" not in html


@pytest.mark.parametrize(
    "params",
    [
        {"start": "yesterday"},
        {"min_cost": "lots"},
        {"min_tokens": "-3"},
        {"team": "no-such-team"},
        {"key": "999999"},
        {"start": "2025-01-02T00:00", "end": "2025-01-01T00:00"},
        {"cursor": "%%%not-a-cursor"},
        {"cursor": "bm90LWEtY3Vyc29y"},  # base64 of something that is not a position
        {"min_cost": "1e999"},
        {"conversation": "x" * 300},
    ],
)
def test_bad_filters_are_form_errors(org, params):
    client = org.client(Role.OWNER)
    response = client.get(org.url("usage"), params)
    assert response.status_code == 400
    assert response.context["form"].errors
    assert 'data-testid="filter-errors"' in response.content.decode()
    fragment = client.get(org.url("usage"), params, headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and b"filter-errors" in fragment.content
    assert client.get(org.url("usage-export"), params).status_code == 400


def test_usage_keyset_paging(org, monkeypatch):
    monkeypatch.setattr("credits.views.PAGE_SIZE", 3)
    client = org.client(Role.OWNER)
    first = client.get(org.url("usage"), {"team": "research"})
    assert [e.event_id for e in first.context["rows"]] == ["m1", "o1", "m2"]
    assert first.context["next_query"].startswith("team=research&cursor=")
    second = client.get(org.url("usage") + "?" + first.context["next_query"])
    assert [e.event_id for e in second.context["rows"]] == ["t1"]
    assert second.context["next_query"] is None
    # A new row does not shift the next page (keyset, not offset).
    spend(org.member_key, "new", "0.10")
    again = client.get(org.url("usage") + "?" + first.context["next_query"])
    assert [e.event_id for e in again.context["rows"]] == ["t1"]


# CSV export -------------------------------------------------------------------------------------


def _csv(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_csv_export_content(org):
    response = org.client(Role.OWNER).get(org.url("usage-export"), {"team": "research"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'attachment; filename="usage-acme-' in response["Content-Disposition"]
    rows = _csv(response)
    assert [r["event_id"] for r in rows] == ["m1", "o1", "m2", "t1"]
    m1 = rows[0]
    assert m1["cost"].startswith("1.25") and m1["model"] == "openai/gpt-4o"
    assert m1["key"] == "mine" and m1["member"] == "member@acme.test"
    assert m1["team"] == "research" and m1["conversation_id"] == "conv-a"
    assert m1["prompt_tokens"] == "1000" and m1["completion_tokens"] == "100"
    assert rows[3]["member"] == "" and rows[3]["operation"] == "embedding"


def test_csv_export_blanks_identities(org):
    viewer = _csv(org.client(Role.VIEWER).get(org.url("usage-export")))
    assert len(viewer) == 4
    assert {r["member"] for r in viewer} == {""} and {r["key"] for r in viewer} == {""}
    member = _csv(org.client(Role.MEMBER).get(org.url("usage-export")))
    assert [(r["event_id"], r["key"], r["member"]) for r in member] == [
        ("m1", "mine", "member@acme.test"),
        ("m2", "mine", "member@acme.test"),
    ]


def test_csv_export_streams_many_rows(org, django_assert_max_num_queries):
    """5,000 rows (bulk-inserted) come out of a generator, in chunks from a server-side cursor."""
    template = UsageEvent.objects.get(event_id="m1")
    now = timezone.now()
    UsageEvent.objects.bulk_create(
        UsageEvent(
            organization=org.tenant.org,
            event_id=f"bulk-{i}",
            request_hash="x",
            api_key=org.member_key,
            team=org.tenant.team,
            member=org.users[Role.MEMBER],
            model="openai/gpt-4o",
            prompt_tokens=10,
            completion_tokens=1,
            cost=Decimal("0.001"),
            cost_source=template.cost_source,
            occurred_at=now - timedelta(seconds=i),
        )
        for i in range(5000)
    )
    response = org.client(Role.OWNER).get(org.url("usage-export"))
    assert response.streaming
    assert isinstance(response.streaming_content, types.GeneratorType | map) or hasattr(
        response.streaming_content, "__next__"
    )
    lines = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
    assert lines == 1 + 5004  # the header and every row


# The ledger --------------------------------------------------------------------------------------


def test_ledger_accounts_and_lots(org):
    response = org.client(Role.OWNER).get(org.url("ledger"))
    kinds = {a.kind for a in response.context["accounts"]}
    assert {LedgerAccount.Kind.POOL, LedgerAccount.Kind.TEAM} <= kinds
    team = next(a for a in response.context["accounts"] if a.kind == LedgerAccount.Kind.TEAM)
    assert team.shown_balance == Decimal("192")  # 200 - 1.25 - 0.75 - 4 - 2
    assert sum(lot.remaining for lot in response.context["lots"]) == Decimal("492")
    # A member sees their team's account only, and no allocation form.
    member = org.client(Role.MEMBER).get(org.url("ledger"))
    assert [a.kind for a in member.context["accounts"]] == [LedgerAccount.Kind.TEAM]
    assert not member.context["show_forms"]
    pool = next(a for a in response.context["accounts"] if a.kind == LedgerAccount.Kind.POOL)
    assert org.client(Role.MEMBER).get(org.url("ledger-account", pk=pool.pk)).status_code == 404


def test_ledger_account_running_balance_across_pages(org, monkeypatch):
    monkeypatch.setattr("credits.views.PAGE_SIZE", 2)
    team = LedgerAccount.objects.get(team=org.tenant.team)
    client = org.client(Role.OWNER)
    seen = []
    url = org.url("ledger-account", pk=team.pk)
    while url:
        response = client.get(url)
        assert response.status_code == 200
        seen += [(e.amount, e.running_balance) for e in response.context["entries"]]
        before = response.context["next_before"]
        url = f"{org.url('ledger-account', pk=team.pk)}?before={before}" if before else None
    entries = list(LedgerEntry.objects.filter(account=team).order_by("id"))
    expected, running = [], Decimal(0)
    for entry in entries:
        running += entry.amount
        expected.append((entry.amount, running))
    assert seen == list(reversed(expected)) and seen[0][1] == team.balance
    bad = client.get(org.url("ledger-account", pk=team.pk), {"before": "x"})
    assert bad.status_code == 400


def test_ledger_needs_credits_read(org, monkeypatch):
    from accounts import access

    monkeypatch.setitem(access.ROLE_SCOPES, Role.VIEWER, frozenset({"org:read"}))
    assert org.client(Role.VIEWER).get(org.url("ledger")).status_code == 404


# Team allocation ------------------------------------------------------------------------------


def test_allocate_and_reclaim_are_audited(org):
    client = org.client(Role.ADMIN)
    url = org.url("team-allocate", slug="research")
    response = client.post(url, {"amount": "25", "direction": "allocate", "memo": "Q3"})
    assert response.status_code == 302
    team = LedgerAccount.objects.get(team=org.tenant.team)
    assert team.balance == Decimal("217")
    event = AuditEvent.objects.filter(action="credits.allocated").latest("id")
    assert event.actor_user == org.users[Role.ADMIN]
    followed = client.get(response["Location"])
    assert "Allocated 25.00 credits to Research." in followed.content.decode()

    client.post(url, {"amount": "5", "direction": "reclaim", "idempotency_key": "k-1"})
    client.post(url, {"amount": "5", "direction": "reclaim", "idempotency_key": "k-1"})  # twice
    team.refresh_from_db()
    assert team.balance == Decimal("212")
    assert AuditEvent.objects.filter(action="credits.reclaimed").count() == 1


@pytest.mark.parametrize("role", [Role.BILLING, Role.MEMBER, Role.VIEWER])
def test_allocate_is_permission_checked(org, role):
    client = org.client(role)
    response = client.post(
        org.url("team-allocate", slug="research"),
        {"amount": "10", "direction": "allocate"},
        follow=True,
    )
    team = LedgerAccount.objects.get(team=org.tenant.team)
    assert team.balance == Decimal("192")
    if role == Role.VIEWER:  # a team the viewer may see, an action it may not take
        assert response.status_code == 200
    assert "credits:write" in response.content.decode()
    assert not AuditEvent.objects.filter(action="credits.allocated", actor_user=org.users[role])


def test_allocate_errors_are_messages(org):
    client = org.client(Role.OWNER)
    url = org.url("team-allocate", slug="research")
    html = client.post(url, {"amount": "-1", "direction": "allocate"}, follow=True)
    assert "Credits:" in html.content.decode()
    html = client.post(url, {"amount": "100000", "direction": "allocate"}, follow=True)
    assert "nsufficient" in html.content.decode()
    team_create(organization=org.tenant.org, slug="ops", name="Ops", funding="pool", actor=SYSTEM)
    html = client.post(
        org.url("team-allocate", slug="ops"), {"amount": "1", "direction": "allocate"}
    )
    assert html.status_code == 302
    assert client.get(org.url("team-allocate", slug="research")).status_code == 405
    assert client.post(org.url("team-allocate", slug="nope"), {}).status_code == 404


def test_team_balances_fragment(org):
    html = org.client(Role.OWNER).get(org.url("team-balances")).content.decode()
    assert 'id="team-balances"' in html and "192.0000" in html and "<html" not in html


# The member's own page --------------------------------------------------------------------------


def test_me_shows_own_usage_keys_and_team(org):
    response = org.client(Role.MEMBER).get(org.url("me"))
    html = response.content.decode()
    assert [e.event_id for e in response.context["recent"]] == ["m1", "m2"]
    assert response.context["totals"]["total"] == Decimal("2.00")
    assert [k.name for k in response.context["keys"]] == ["mine"]
    assert [t.team.slug for t in response.context["teams"]] == ["research"]
    assert "192.0000" in html  # the team's available credits
    assert "8.0000" in html  # the team's total spend: a total, not who spent it
    assert "secret-colleague" not in html and "colleague-key" not in html


# The dashboard ----------------------------------------------------------------------------------


def test_dashboard_rates_and_projection(org):
    response = org.client(Role.OWNER).get(org.url("dashboard"))
    rates = {r.name: r for r in response.context["rates"]}
    assert rates["24h"].spent == Decimal("5.25")  # m1 and o1
    assert rates["7d"].spent == Decimal("8.00")
    projection = response.context["projection"]
    assert projection.rate is not None
    html = response.content.decode()
    assert "The projection uses" in html
    fragment = org.client(Role.OWNER).get(org.url("dashboard-conversations")).content.decode()
    assert fragment.index("conv-b") < fragment.index("conv-a")  # by cost
    assert sum(h.cost for h in response.context["hours"]) == Decimal("8.00")


def test_dashboard_days_in_the_organizations_time_zone(org):
    org.tenant.org.time_zone = "Pacific/Kiritimati"  # UTC+14: "today" differs from UTC's
    org.tenant.org.save()
    response = org.client(Role.OWNER).get(org.url("dashboard"))
    local_today = timezone.localtime(timezone.now(), _tz("Pacific/Kiritimati")).date()
    assert response.context["days"][-1].day == local_today
    assert "Pacific/Kiritimati" in response.content.decode()


def _tz(name):
    import zoneinfo

    return zoneinfo.ZoneInfo(name)
