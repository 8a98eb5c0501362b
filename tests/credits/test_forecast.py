"""`GET /api/v1/credits/forecast`: run rates, hours of day and projected depletion, of what the
caller may see."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from accounts.services import team_create
from credits.services import Attribution, UsageInput, usage_record

from ..conftest import SYSTEM

FORECAST = "/api/v1/credits/forecast"


def _spend(key, id: str, cost: str, hours_ago: float) -> None:
    usage_record(
        attribution=Attribution.of_key(key),
        event=UsageInput(
            id=id,
            model="gpt-4o",
            cost=Decimal(cost),
            occurred_at=timezone.now() - timedelta(hours=hours_ago),
        ),
    )


def test_rates_hours_and_depletion_of_the_organization_and_each_account(tenant, prices):
    tenant.grant("100")
    tenant.allocate("10")  # team research: 10 of its own
    research_key, _ = tenant.key("usage", team=tenant.team)
    pool_key, _ = tenant.key("usage")
    for day in range(8):  # research: 1 credit a day, for longer than a week
        _spend(research_key, f"r{day}", "1", hours_ago=24 * day + 2)
    _spend(pool_key, "p1", "6", hours_ago=24 * 20)  # the pool: once, 20 days ago
    _, secret = tenant.key("management")
    body = tenant.client(secret).get(FORECAST).json()

    assert body["time_zone"] == "UTC"
    assert Decimal(body["available"]) == Decimal(100 - 8 - 6)
    rates = {r["window"]: r for r in body["rates"]}
    assert Decimal(rates["7d"]["spent"]) == 7 and Decimal(rates["30d"]["spent"]) == 14
    assert Decimal(rates["7d"]["per_day"]) == 1 and not rates["7d"]["partial"]
    assert body["projection"]["rate"] == "7d"
    assert Decimal(body["projection"]["days"]) == 86
    today = timezone.now().date()
    assert body["projection"]["depletes_on"] == str(today + timedelta(days=86))
    assert len(body["hours"]) == 24
    assert sum(Decimal(h["cost"]) for h in body["hours"]) == 14

    accounts = {(a["kind"], a["team"]): a for a in body["accounts"]}
    team = accounts[("team", "research")]
    assert Decimal(team["available"]) == 2
    assert team["projection"]["rate"] == "7d"
    assert team["projection"]["depletes_on"] == str(today + timedelta(days=2))
    pool = accounts[("pool", None)]
    assert Decimal(pool["available"]) == 84
    # nothing in the pool's last week: its 30-day rate (6 over 20 days of history)
    assert pool["projection"]["rate"] == "30d"


def test_a_team_key_forecasts_its_own_team_only(tenant, prices):
    tenant.grant("100")
    other = team_create(organization=tenant.org, slug="other", name="Other", actor=SYSTEM)
    tenant.allocate("10")
    tenant.allocate("20", team=other)
    research_key, secret = tenant.key("usage", team=tenant.team)
    other_key, _ = tenant.key("usage", team=other)
    _spend(research_key, "r", "1", hours_ago=3)
    _spend(other_key, "o", "5", hours_ago=3)
    body = tenant.client(secret).get(FORECAST).json()
    assert [(a["kind"], a["team"]) for a in body["accounts"]] == [("team", "research")]
    assert Decimal(body["available"]) == 9
    assert Decimal({r["window"]: r for r in body["rates"]}["24h"]["spent"]) == 1


def test_nothing_spent_projects_nothing(tenant):
    tenant.grant("5")
    _, secret = tenant.key("management")
    body = tenant.client(secret).get(FORECAST).json()
    assert body["projection"] == {
        "rate": None,
        "reason": "nothing was spent in the last 30 days",
        "days": None,
        "depletes_on": None,
    }
