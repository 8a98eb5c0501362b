"""Who a member's usage is charged to (`Principal.spending_team`): a principal acting for a member
of role `member`, bound to no team (a key bound to the member, or their session), is charged to
the one team it sees, with that team's account (or the pool, for a pool-funded team) and its
budgets; on no team or on several it is refused (403) and writes nothing. Before, it was charged
to the organization's pool, which such a member may not read, and `balance_after` showed it."""

from decimal import Decimal as D

import pytest

from accounts.roles import Role
from accounts.services import team_create, team_member_remove, team_member_set
from credits.models import LedgerAccount, UsageEvent
from credits.services.budgets import budget_create

from ..conftest import SYSTEM

pytestmark = pytest.mark.django_db

EVENT = {"model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100}


def _balances(tenant) -> dict:
    return {
        (a.kind, a.team.slug if a.team_id else None): a.balance
        for a in LedgerAccount.objects.filter(
            organization=tenant.org, kind__in=LedgerAccount.HOLDS_LOTS
        ).select_related("team")
    }


def test_a_members_key_is_charged_to_their_team_with_its_budgets(tenant, prices):
    tenant.grant("100")
    tenant.allocate("5")
    member = tenant.member(Role.MEMBER, team=tenant.team)
    _, secret = tenant.key("usage", user=member)
    client = tenant.client(secret)
    before = _balances(tenant)

    made = client.post("/api/v1/credits/usage", {"id": "m1", **EVENT}, format="json")

    assert made.status_code == 201, made.content
    cost = D(made.json()["event"]["cost"])
    assert made.json()["event"]["team"] == "research"
    after = _balances(tenant)
    assert after[("pool", None)] == before[("pool", None)]  # the pool is not theirs
    assert after[("team", "research")] == before[("team", "research")] - cost
    # balance_after is what they draw on, as their balance shows it; never the pool's
    assert D(made.json()["balance_after"]) == after[("team", "research")]
    shown = client.get("/api/v1/credits/balance").json()
    assert D(shown["available"]) == after[("team", "research")]
    assert shown["pool_balance"] is None

    # The team's hard budget holds them too.
    budget_create(organization=tenant.org, scope="team", team=tenant.team, period="daily",
                  limit="0.000001", actor=SYSTEM)  # fmt: skip
    refused = client.post("/api/v1/credits/usage", {"id": "m2", **EVENT}, format="json")
    assert refused.status_code == 402, refused.content
    assert refused.json()["error"]["metadata"]["type"] == "budget_exceeded"


def test_a_member_on_a_pool_funded_team_draws_on_the_pool_as_that_team(tenant, prices):
    team = team_create(organization=tenant.org, slug="ops", name="Ops", funding="pool",
                       actor=SYSTEM)  # fmt: skip
    tenant.grant("10")
    member = tenant.member(Role.MEMBER, team=team)
    _, secret = tenant.key("usage", user=member)

    made = tenant.client(secret).post("/api/v1/credits/usage", {"id": "p1", **EVENT}, format="json")

    assert made.status_code == 201, made.content
    assert made.json()["event"]["team"] == "ops"
    assert D(made.json()["balance_after"]) == _balances(tenant)[("pool", None)]


@pytest.mark.parametrize("teams", [0, 2])
def test_a_member_on_no_team_or_several_is_refused_and_nothing_is_written(tenant, prices, teams):
    tenant.grant("10")
    member = tenant.member(Role.MEMBER)
    second = team_create(organization=tenant.org, slug="ops", name="Ops", actor=SYSTEM)
    for team in (tenant.team, second)[:teams]:
        team_member_set(team=team, user=member, actor=SYSTEM)
    _, secret = tenant.key("usage", user=member)
    client = tenant.client(secret)
    before = _balances(tenant)

    for path, body in (
        ("/api/v1/credits/usage", {"id": "x1", **EVENT}),
        ("/api/v1/credits/usage", {"events": [{"id": "x2", **EVENT}]}),
        ("/api/v1/credits/authorizations", {"id": "h1", "amount": "0.5"}),
    ):
        response = client.post(path, body, format="json")
        assert response.status_code == 403, (path, response.content)
        error = response.json()["error"]
        assert error["code"] == 403 and error["metadata"]["type"] == "forbidden"
        assert ("no team" if teams == 0 else "several teams (ops, research)") in error["message"]

    assert not UsageEvent.objects.filter(organization=tenant.org).exists()
    assert _balances(tenant) == before


def test_a_key_bound_to_one_of_their_teams_says_which(tenant, prices):
    tenant.grant("10")
    second = team_create(organization=tenant.org, slug="ops", name="Ops", funding="pool",
                         actor=SYSTEM)  # fmt: skip
    member = tenant.member(Role.MEMBER, team=tenant.team)
    team_member_set(team=second, user=member, actor=SYSTEM)
    _, secret = tenant.key("usage", user=member, team=second)

    made = tenant.client(secret).post("/api/v1/credits/usage", {"id": "k1", **EVENT}, format="json")

    assert made.status_code == 201, made.content
    assert made.json()["event"]["team"] == "ops"


def test_a_members_session_is_charged_like_their_key(tenant, prices, client):
    tenant.grant("100")
    tenant.allocate("5")
    member = tenant.member(Role.MEMBER, team=tenant.team)
    client.force_login(member)
    pool = _balances(tenant)[("pool", None)]

    made = client.post("/api/v1/credits/usage", {"id": "s1", **EVENT},
                       content_type="application/json", HTTP_X_ORGANIZATION="acme")  # fmt: skip

    assert made.status_code == 201, made.content
    assert made.json()["event"]["team"] == "research"
    assert _balances(tenant)[("pool", None)] == pool


def test_an_admins_key_still_draws_on_the_pool(tenant, prices):
    tenant.grant("10")
    admin = tenant.member(Role.ADMIN, team=tenant.team)  # on a team, but of the whole org
    _, secret = tenant.key("usage", user=admin)

    made = tenant.client(secret).post("/api/v1/credits/usage", {"id": "a1", **EVENT}, format="json")

    assert made.status_code == 201, made.content
    assert made.json()["event"]["team"] is None
    assert D(made.json()["balance_after"]) == _balances(tenant)[("pool", None)]


def test_a_move_to_another_team_counts_at_once_in_the_process_that_made_it(tenant, prices):
    tenant.grant("100")
    ops = team_create(organization=tenant.org, slug="ops", name="Ops", funding="pool",
                      actor=SYSTEM)  # fmt: skip
    tenant.allocate("5")
    member = tenant.member(Role.MEMBER, team=tenant.team)
    client = tenant.client(tenant.key("usage", user=member)[1])
    first = client.post("/api/v1/credits/usage", {"id": "v1", **EVENT}, format="json")
    assert first.json()["event"]["team"] == "research"  # their teams are now kept a second

    team_member_remove(team=tenant.team, user=member, actor=SYSTEM)
    team_member_set(team=ops, user=member, actor=SYSTEM)
    moved = client.post("/api/v1/credits/usage", {"id": "v2", **EVENT}, format="json")

    assert moved.status_code == 201, moved.content
    assert moved.json()["event"]["team"] == "ops"
