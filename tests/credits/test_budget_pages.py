"""The budgets page per role (issue 8), the alerts API (`/api/v1/alerts`, acknowledge), and
`authorization.refused` when an authorization is refused (once per key per hour)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from accounts.roles import Role, TeamRole
from accounts.services import team_create, team_member_set
from credits.models import Alert, Budget
from credits.services import Attribution, UsageInput, usage_record
from credits.services.budgets import budget_create
from notifications.models import NotificationEvent

from ..conftest import SYSTEM


@pytest.fixture
def world(tenant):
    """Owner, admin, viewer, a member on research, a manager of team ops with a worker on it,
    and budgets: the organization, team research, team ops, the worker, the member."""
    t = tenant
    people = {
        "owner": t.owner,
        "admin": t.member(Role.ADMIN, email="admin@acme.test"),
        "viewer": t.member(Role.VIEWER, email="viewer@acme.test"),
        "member": t.member(Role.MEMBER, email="member@acme.test"),
        "manager": t.member(Role.MEMBER, email="manager@acme.test"),
        "worker": t.member(Role.MEMBER, email="worker@acme.test"),
    }
    ops = team_create(organization=t.org, slug="ops", name="Ops", actor=SYSTEM)
    team_member_set(team=t.team, user=people["member"], actor=SYSTEM)
    team_member_set(team=ops, user=people["manager"], role=TeamRole.MANAGER, actor=SYSTEM)
    team_member_set(team=ops, user=people["worker"], actor=SYSTEM)

    def make(scope, limit="50", **target):
        return budget_create(
            organization=t.org, scope=scope, period="monthly", limit=limit, actor=SYSTEM, **target
        )

    budgets = {
        "organization": make("organization", "100"),
        "research": make("team", team=t.team),
        "ops": make("team", team=ops),
        "worker": make("member", member=people["worker"]),
        "member": make("member", member=people["member"]),
    }
    return t, people, ops, budgets


def page(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api(user, org) -> APIClient:
    client = APIClient()
    client.force_login(user)
    client.credentials(HTTP_X_ORGANIZATION=org.slug)
    return client


def url(org, rest="") -> str:
    return f"/o/{org.slug}/budgets/{rest}"


def shown(response) -> set[str]:
    html = response.content.decode()
    return {
        str(b.public_id) for b in Budget.objects.all() if f'data-budget="{b.public_id}"' in html
    }


def alert(budget, threshold=75, spent="40") -> Alert:
    return Alert.objects.create(
        organization=budget.organization, budget=budget, window_start=timezone.now(),
        threshold=threshold, type=Alert.Type.THRESHOLD_CROSSED, spent=Decimal(spent),
        limit=budget.limit,
    )  # fmt: skip


# The page ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role, sees, may_create",
    [
        ("owner", {"organization", "research", "ops", "worker", "member"}, True),
        ("admin", {"organization", "research", "ops", "worker", "member"}, True),
        ("viewer", {"organization", "research", "ops", "worker", "member"}, False),
        ("member", {"organization", "research", "member"}, False),
        ("manager", {"organization", "ops", "worker"}, True),
    ],
)
def test_the_page_shows_the_budgets_each_role_sees(world, role, sees, may_create):
    t, people, _, budgets = world
    response = page(people[role]).get(url(t.org))
    assert response.status_code == 200
    assert shown(response) == {str(budgets[name].public_id) for name in sees}
    html = response.content.decode()
    assert ("New budget" in html) is may_create
    assert "<progress" in html and 'style="' not in html  # CSP: no inline styles
    assert 'href="/o/acme/budgets/"' in html  # in the section nav


def test_window_bounds_are_in_the_organizations_time_zone(world):
    t, people, _, _ = world
    t.org.time_zone = "Asia/Tokyo"
    t.org.save()
    html = page(t.owner).get(url(t.org)).content.decode()
    assert " JST" in html and "Asia/Tokyo" in html


def test_the_owner_creates_edits_and_deletes_a_budget(world, prices):
    t, people, _, _ = world
    client = page(t.owner)
    response = client.post(url(t.org), {
        "scope": "team", "team": "research", "period": "daily", "limit": "7", "mode": "soft",
        "grace": "1", "thresholds": "50, 80", "operation": "chat", "model": "anthropic/",
    })  # fmt: skip
    assert response.status_code == 302
    made = Budget.objects.get(period="daily")
    assert (made.team, made.limit, made.mode, made.thresholds, made.model) == (
        t.team,
        Decimal("7"),
        "soft",
        [50, 80],
        "anthropic/",
    )
    edit = client.get(url(t.org, f"{made.public_id}/edit/"))
    assert edit.status_code == 200 and 'value="50, 80"' in edit.content.decode()
    assert client.post(url(t.org, f"{made.public_id}/edit/"), {
        "period": "daily", "limit": "9", "mode": "soft", "grace": "1", "thresholds": "50, 80",
        "operation": "chat", "model": "anthropic/",
    }).status_code == 302  # fmt: skip
    made.refresh_from_db()
    assert made.limit == Decimal("9")
    assert AuditEvent.objects.filter(action="budget.updated").exists()
    confirm = client.get(url(t.org, f"{made.public_id}/delete/"))
    assert confirm.status_code == 200 and "Delete the budget" in confirm.content.decode()
    assert client.post(url(t.org, f"{made.public_id}/delete/")).status_code == 302
    assert not Budget.objects.filter(pk=made.pk).exists()


def test_the_services_rules_show_on_the_form(world):
    t, *_ = world
    response = page(t.owner).post(url(t.org), {
        "scope": "organization", "period": "daily", "limit": "5", "mode": "hard",
        "thresholds": "50, 150",
    })  # fmt: skip
    assert response.status_code == 400
    assert Budget.objects.filter(period="daily").count() == 0
    bad = page(t.owner).post(url(t.org), {"scope": "team", "period": "daily", "limit": "5",
                                          "mode": "hard", "thresholds": "a, b"})  # fmt: skip
    assert bad.status_code == 400 and "Whole percents" in bad.content.decode()


def test_a_team_manager_sets_the_budgets_of_their_team_members_only(world):
    t, people, _, budgets = world
    client = page(people["manager"])
    html = client.get(url(t.org)).content.decode()
    assert "worker@acme.test" in html and "member@acme.test" not in html
    ok = client.post(url(t.org), {"scope": "member", "member": "worker@acme.test",
                                  "period": "daily", "limit": "2", "mode": "hard"})  # fmt: skip
    assert ok.status_code == 302
    refused = client.post(url(t.org), {"scope": "member", "member": "member@acme.test",
                                       "period": "daily", "limit": "2"})  # fmt: skip
    assert refused.status_code == 400
    assert client.post(url(t.org), {"scope": "organization", "period": "daily", "limit": "2",
                                    "mode": "hard"}).status_code == 400  # fmt: skip
    assert Budget.objects.filter(period="daily").count() == 1
    assert client.get(url(t.org, f"{budgets['worker'].public_id}/edit/")).status_code == 200
    assert client.get(url(t.org, f"{budgets['ops'].public_id}/edit/")).status_code == 404
    assert client.post(url(t.org, f"{budgets['worker'].public_id}/delete/")).status_code == 302
    assert not Budget.objects.filter(pk=budgets["worker"].pk).exists()


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_readers_change_nothing(world, role):
    t, people, _, budgets = world
    client = page(people[role])
    target = budgets["organization"].public_id
    assert client.get(url(t.org, f"{target}/edit/")).status_code == 404
    assert client.post(url(t.org, f"{target}/delete/")).status_code == 404
    assert client.post(url(t.org), {"scope": "organization", "period": "daily", "limit": "1",
                                    "mode": "hard"}).status_code == 404  # fmt: skip
    assert Budget.objects.count() == 5


def test_the_alerts_section_acknowledges(world):
    t, people, _, budgets = world
    a = alert(budgets["ops"])
    html = page(people["viewer"]).get(url(t.org)).content.decode()
    assert f'data-alert="{a.public_id}"' in html and "Acknowledge" not in html
    manager = page(people["manager"])
    assert "Acknowledge" in manager.get(url(t.org)).content.decode()
    assert manager.post(url(t.org, f"alerts/{a.public_id}/acknowledge/")).status_code == 302
    a.refresh_from_db()
    assert a.acknowledged_at is not None and a.acknowledged_by == people["manager"]
    assert (
        page(people["member"]).post(url(t.org, f"alerts/{a.public_id}/acknowledge/")).status_code
        == 404
    )


# The alerts API ---------------------------------------------------------------------------------


def test_alerts_list_as_the_principal_sees_the_budgets(world):
    t, people, _, budgets = world
    alerts = {name: alert(budgets[name]) for name in ("organization", "research", "ops")}
    listed = api(t.owner, t.org).get("/api/v1/alerts")
    assert listed.status_code == 200
    body = listed.json()
    assert [d["id"] for d in body["results"]] == [
        str(alerts[n].public_id) for n in ("ops", "research", "organization")
    ]
    first = body["results"][0]
    assert set(first) == {"id", "type", "created_at", "budget", "threshold", "window_start",
                          "spent", "limit", "acknowledged_at"}  # fmt: skip
    assert first["budget"] == str(budgets["ops"].public_id) and first["acknowledged_at"] is None
    member = api(people["member"], t.org).get("/api/v1/alerts").json()["results"]
    assert {d["id"] for d in member} == {
        str(alerts["organization"].public_id),
        str(alerts["research"].public_id),
    }
    paged = api(t.owner, t.org).get("/api/v1/alerts", {"limit": 2}).json()
    assert len(paged["results"]) == 2 and paged["next"]


def test_alerts_list_with_a_key_bound_to_a_team(world):
    t, _, ops, budgets = world
    alert(budgets["research"])
    mine = alert(budgets["ops"])
    _, secret = t.key("management", team=ops)
    data = t.client(secret).get("/api/v1/alerts").json()["results"]
    assert [d["id"] for d in data] == [str(mine.public_id)]


def test_acknowledge_needs_credits_write_or_the_team_manager(world):
    t, people, _, budgets = world
    a = alert(budgets["ops"])
    path = f"/api/v1/alerts/{a.public_id}/acknowledge"
    assert api(people["viewer"], t.org).post(path).status_code == 403
    assert api(people["member"], t.org).post(path).status_code == 404  # invisible
    assert api(people["worker"], t.org).post(path).status_code == 403  # on ops: sees it
    response = api(people["manager"], t.org).post(path)
    assert response.status_code == 200 and response.json()["acknowledged_at"]
    audit = AuditEvent.objects.filter(action="alert.acknowledged")
    assert audit.count() == 1
    again = api(t.owner, t.org).post(path)  # already acknowledged: kept as it was
    assert again.json()["acknowledged_at"] == response.json()["acknowledged_at"]
    assert audit.count() == 1
    other = alert(budgets["organization"])
    assert (
        api(people["manager"], t.org)
        .post(f"/api/v1/alerts/{other.public_id}/acknowledge")
        .status_code
        == 403
    )
    assert (
        api(people["admin"], t.org)
        .post(f"/api/v1/alerts/{other.public_id}/acknowledge")
        .status_code
        == 200
    )
    assert (
        api(t.owner, t.org)
        .post("/api/v1/alerts/00000000-0000-0000-0000-000000000000/acknowledge")
        .status_code
        == 404
    )


def test_alerts_of_another_organization_are_404(world, other_tenant):
    t, _, _, budgets = world
    a = alert(budgets["ops"])
    client = api(other_tenant.owner, other_tenant.org)
    assert client.get("/api/v1/alerts").json()["results"] == []
    assert client.post(f"/api/v1/alerts/{a.public_id}/acknowledge").status_code == 404


def test_alerts_fired_by_usage_have_public_ids(tenant):
    tenant.grant("100")
    budget = budget_create(organization=tenant.org, scope="organization", period="daily",
                           limit="10", actor=SYSTEM)  # fmt: skip
    key, _ = tenant.key("usage")
    usage_record(attribution=Attribution.of_key(key),
                 event=UsageInput(id="e1", model="gpt-4o", cost=Decimal("8")))  # fmt: skip
    fired = Alert.objects.get(budget=budget)
    assert fired.public_id and fired.threshold == 75


# authorization.refused --------------------------------------------------------------------------


def test_a_refused_authorization_is_told_once_per_key_per_hour(tenant):
    _, secret = tenant.key("usage")
    client = tenant.client(secret)
    for n in range(3):
        response = client.post("/api/v1/credits/authorizations", {"id": f"h{n}", "amount": "5"},
                               format="json")  # fmt: skip
        assert response.status_code == 402
        assert response.json()["error"]["metadata"]["type"] == "insufficient_credits"
    events = NotificationEvent.objects.filter(type="authorization.refused")
    assert events.count() == 1
    data = events.get().data
    assert data["key"] and "budget" not in data and data["reason"]
    # the next hour: told again
    events.update(bucket=events.get().bucket - timedelta(hours=1))
    client.post("/api/v1/credits/authorizations", {"id": "h9", "amount": "5"}, format="json")
    assert events.count() == 2


def test_a_refusal_by_a_budget_names_it(tenant):
    tenant.grant("100")
    key, secret = tenant.key("usage")
    budget = budget_create(organization=tenant.org, scope="api_key", api_key=key,
                           period="daily", limit="1", actor=SYSTEM)  # fmt: skip
    response = tenant.client(secret).post(
        "/api/v1/credits/authorizations", {"id": "h1", "amount": "5"}, format="json"
    )
    assert response.status_code == 402
    assert response.json()["error"]["metadata"]["type"] == "budget_exceeded"
    event = NotificationEvent.objects.get(type="authorization.refused")
    assert event.data["budget"] == str(budget.public_id)
    assert event.dedupe_key == key.hash
