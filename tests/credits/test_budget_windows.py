"""Budget windows are calendar periods in the organization's time zone (weeks from Monday),
key limits set through the OpenRouter API in UTC; a new window is a new counter row; and the
migration that turned existing key limits into budgets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts.models import Organization
from credits.models import BudgetWindow
from credits.periods import EPOCH, window_bounds
from credits.services import Attribution, UsageInput, usage_record
from credits.services.budgets import budget_create
from portal.errors import BudgetExceeded

from ..conftest import SYSTEM

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(zone, *args):
    return datetime(*args, tzinfo=zone)


@pytest.mark.parametrize(
    ("zone", "now", "period", "start", "end"),
    [
        # A Berlin day from 00:00 to 00:00 Berlin time, whatever UTC says.
        (BERLIN, at(BERLIN, 2027, 3, 10, 23, 59, 59), "daily",
         at(BERLIN, 2027, 3, 10), at(BERLIN, 2027, 3, 11)),
        (BERLIN, at(BERLIN, 2027, 3, 11, 0, 0, 0), "daily",
         at(BERLIN, 2027, 3, 11), at(BERLIN, 2027, 3, 12)),
        # Month ends, and 29 February 2028.
        (BERLIN, at(BERLIN, 2028, 2, 29, 23, 59, 59), "monthly",
         at(BERLIN, 2028, 2, 1), at(BERLIN, 2028, 3, 1)),
        (BERLIN, at(BERLIN, 2028, 2, 29, 12), "daily",
         at(BERLIN, 2028, 2, 29), at(BERLIN, 2028, 3, 1)),
        (NEW_YORK, at(NEW_YORK, 2027, 12, 31, 23, 59, 59), "monthly",
         at(NEW_YORK, 2027, 12, 1), at(NEW_YORK, 2028, 1, 1)),
        (NEW_YORK, at(NEW_YORK, 2028, 1, 1, 0, 0, 0), "monthly",
         at(NEW_YORK, 2028, 1, 1), at(NEW_YORK, 2028, 2, 1)),
        # Sunday 23:59:59 is still last week; Monday 00:00 starts a new one.
        (NEW_YORK, at(NEW_YORK, 2027, 5, 9, 23, 59, 59), "weekly",
         at(NEW_YORK, 2027, 5, 3), at(NEW_YORK, 2027, 5, 10)),
        (NEW_YORK, at(NEW_YORK, 2027, 5, 10, 0, 0, 0), "weekly",
         at(NEW_YORK, 2027, 5, 10), at(NEW_YORK, 2027, 5, 17)),
        # DST: Berlin's 28 March 2027 lasts 23 hours, New York's 7 November 2027 25 hours.
        (BERLIN, at(BERLIN, 2027, 3, 28, 12), "daily",
         at(BERLIN, 2027, 3, 28), at(BERLIN, 2027, 3, 29)),
        (NEW_YORK, at(NEW_YORK, 2027, 11, 7, 23, 30), "daily",
         at(NEW_YORK, 2027, 11, 7), at(NEW_YORK, 2027, 11, 8)),
        (BERLIN, at(BERLIN, 2027, 3, 28), "lifetime", EPOCH, None),
    ],
)  # fmt: skip
def test_windows_in_the_organizations_time_zone(zone, now, period, start, end):
    got = window_bounds(period, now.astimezone(UTC), str(zone))
    assert got == (start, end)
    assert got[0].utcoffset() == timedelta(0)  # stored in UTC


def test_dst_days_last_23_and_25_hours():
    short = window_bounds("daily", at(BERLIN, 2027, 3, 28, 12), "Europe/Berlin")
    long = window_bounds("daily", at(NEW_YORK, 2027, 11, 7, 12), "America/New_York")
    assert short[1] - short[0] == timedelta(hours=23)
    assert long[1] - long[0] == timedelta(hours=25)


def test_a_new_window_is_a_new_row_and_key_limits_stay_in_utc(tenant):
    tenant.org.time_zone = "America/New_York"
    tenant.org.save()
    tenant.grant("10")
    key, _ = tenant.key("usage", limit="1", limit_reset="daily")  # OpenRouter: UTC days
    org_budget = budget_create(
        organization=tenant.org, scope="organization", period="daily", limit="1", actor=SYSTEM
    )
    who = Attribution.of_key(key)

    def record(id, when):
        with mock.patch("django.utils.timezone.now", return_value=when):
            return usage_record(
                attribution=who, event=UsageInput(id=id, model="m", cost=Decimal("0.6"))
            )

    # 23:30 in New York on 1 March 2027 is 04:30 UTC on 2 March.
    record("a", at(NEW_YORK, 2027, 3, 1, 23, 30))
    with pytest.raises(BudgetExceeded) as refused:
        record("b", at(NEW_YORK, 2027, 3, 1, 23, 45))  # both windows hold 0.6
    assert refused.value.metadata["budget"]["scope"] == "organization"  # a tie: checked first
    # 00:10 New York on 2 March: a new organization day, the same UTC day for the key.
    with pytest.raises(BudgetExceeded) as refused:
        record("c", at(NEW_YORK, 2027, 3, 2, 0, 10))
    assert refused.value.metadata["budget"]["window_start"] == "2027-03-02T00:00:00+00:00"
    # 20:00 New York on 2 March is 01:00 UTC on 3 March: a new UTC day for the key, and the
    # organization's 2 March window is new too.
    record("d", at(NEW_YORK, 2027, 3, 2, 20, 0))
    starts = sorted(
        BudgetWindow.objects.filter(budget=org_budget, window_start__year=2027).values_list(
            "window_start", flat=True
        )
    )
    assert starts == [
        at(NEW_YORK, 2027, 3, 1).astimezone(UTC),
        at(NEW_YORK, 2027, 3, 2).astimezone(UTC),
    ]


# The migration of existing key limits --------------------------------------------------------

BEFORE = [("accounts", "0004_apikey_explicit_scopes"), ("credits", "0005_budgets")]
AFTER = [("accounts", "0005_apikey_limit_is_a_budget")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_existing_key_limits_become_budgets_with_their_current_spend():
    org = Organization.objects.create(slug="old", name="Old", time_zone="Europe/Berlin")
    apps = migrate(BEFORE)
    try:
        ApiKey = apps.get_model("accounts", "ApiKey")
        UsageEvent = apps.get_model("credits", "UsageEvent")
        Hold = apps.get_model("credits", "Hold")
        LedgerAccount = apps.get_model("credits", "LedgerAccount")
        now = timezone.now()

        def key(name, **limit):
            return ApiKey.objects.create(
                organization_id=org.pk, name=name, hash=name * 8, label=name, **limit
            )

        daily = key("daily", limit=Decimal("5"), limit_reset="daily")
        total = key("total", limit=Decimal("9"))
        free = key("free")

        def used(key, event_id, cost, when):
            UsageEvent.objects.create(
                organization_id=org.pk, event_id=event_id, request_hash="h", api_key=key, model="m",
                cost=Decimal(cost), cost_source="reported", occurred_at=when, recorded_at=when,
            )  # fmt: skip

        used(daily, "today", "1.25", now)
        used(daily, "long-ago", "3", now - timedelta(days=40))
        used(total, "t1", "2", now - timedelta(days=40))
        used(free, "f1", "7", now)
        pool = LedgerAccount.objects.create(organization_id=org.pk, kind="pool", balance=10, held=1)
        Hold.objects.create(
            organization_id=org.pk, account=pool, amount=Decimal("0.5"), idempotency_key="h1",
            request_hash="h", api_key=daily, expires_at=now + timedelta(minutes=5),
        )  # fmt: skip

        apps = migrate(AFTER)
        Budget = apps.get_model("credits", "Budget")
        BudgetWindow = apps.get_model("credits", "BudgetWindow")
        budgets = {b.api_key.name: b for b in Budget.objects.select_related("api_key")}
        assert set(budgets) == {"daily", "total"}
        assert all(b.utc_windows and b.mode == "hard" for b in budgets.values())
        assert (budgets["daily"].period, budgets["total"].period) == ("daily", "lifetime")
        w = BudgetWindow.objects.get(budget=budgets["daily"])
        assert (w.spent, w.held) == (Decimal("1.25"), Decimal("0.5"))
        assert w.window_start == now.astimezone(UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        assert BudgetWindow.objects.get(budget=budgets["total"]).spent == 2
        today = apps.get_model("credits", "UsageEvent").objects.get(event_id="today")
        assert today.budget_windows == [w.pk]

        apps = migrate(BEFORE[:1] + [("credits", "0006_key_limits_to_budgets")])
        apps = migrate(BEFORE)  # and back
        ApiKey = apps.get_model("accounts", "ApiKey")
        assert ApiKey.objects.get(name="daily").limit == 5
        assert ApiKey.objects.get(name="daily").limit_reset == "daily"
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
