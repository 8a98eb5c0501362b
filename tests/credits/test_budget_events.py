"""The scheduled budget events (credits/services/alerts.py): `budget.recovered` when a budget
exhausted in its previous window enters a new one, and `budget.forecast_exceeded` when its spend
is projected past the limit at the window's end; each once per budget and window (a database
constraint), in the organization's time zone; and the per-budget forecast of
`GET /api/v1/credits/forecast`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.db import IntegrityError, transaction

from accounts.services import team_create
from credits import tasks
from credits.models import Alert, BudgetWindow
from credits.services import Attribution, UsageInput, usage_record
from credits.services.alerts import budgets_forecast_check, budgets_recovered_check
from credits.services.budgets import budget_create
from notifications.models import Notification, OutboxMessage
from notifications.services import webhook_endpoint_create
from portal.errors import BudgetExceeded

from ..conftest import SYSTEM

NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")  # UTC+05:30: its midnight is 18:30 UTC
BERLIN = ZoneInfo("Europe/Berlin")


def at(zone, *args) -> datetime:
    return datetime(*args, tzinfo=zone)


def _zone(tenant, name: str) -> None:
    tenant.org.time_zone = name
    tenant.org.save()


def _spend(tenant, id: str, cost: str, when: datetime) -> None:
    with mock.patch("django.utils.timezone.now", return_value=when):
        usage_record(
            attribution=Attribution(organization=tenant.org),
            event=UsageInput(id=id, model="gpt-4o", cost=Decimal(cost)),
        )


def _budget(tenant, period: str, limit: str, **kwargs):
    return budget_create(
        organization=tenant.org, scope="organization", period=period, limit=limit, actor=SYSTEM,
        **kwargs,
    )  # fmt: skip


def _alerts(budget, type: str) -> list[Alert]:
    return list(Alert.objects.filter(budget=budget, type=type).order_by("window_start"))


# budget.recovered ------------------------------------------------------------------------------


def test_a_hard_budget_recovers_at_midnight_of_the_organizations_day_once(tenant):
    _zone(tenant, "America/New_York")
    tenant.grant("100")
    webhook_endpoint_create(
        organization=tenant.org, url="https://hooks.example.com/b", events=["budget.recovered"],
        actor=SYSTEM,
    )  # fmt: skip
    budget = _budget(tenant, "daily", "1")
    _spend(tenant, "a", "1", at(NEW_YORK, 2027, 3, 1, 18, 0))  # 100 % of a hard budget
    with pytest.raises(BudgetExceeded):
        _spend(tenant, "b", "0.01", at(NEW_YORK, 2027, 3, 1, 18, 5))
    (exhausted,) = _alerts(budget, Alert.Type.EXHAUSTED)
    assert exhausted.window_start == at(NEW_YORK, 2027, 3, 1).astimezone(UTC)

    # Midnight UTC (19:00 in New York) and 23:59:59 in New York: still the same window.
    assert budgets_recovered_check(now=at(UTC, 2027, 3, 2, 0, 0)) == []
    assert budgets_recovered_check(now=at(NEW_YORK, 2027, 3, 1, 23, 59, 59)) == []
    # 00:00:00 in New York (05:00 UTC): a new window, and room again, without any traffic.
    (recovered,) = budgets_recovered_check(now=at(NEW_YORK, 2027, 3, 2, 0, 0, 0))
    assert recovered.type == "budget.recovered" and recovered.threshold is None
    assert recovered.window_start == datetime(2027, 3, 2, 5, 0, tzinfo=UTC)
    assert recovered.spent == 0 and recovered.limit == 1
    # The check runs again (every minute): nothing more.
    assert budgets_recovered_check(now=at(NEW_YORK, 2027, 3, 2, 0, 1)) == []
    assert budgets_recovered_check(now=at(NEW_YORK, 2027, 3, 2, 13, 0)) == []
    assert len(_alerts(budget, Alert.Type.RECOVERED)) == 1
    (told,) = Notification.objects.filter(recipient=tenant.owner, type="budget.recovered")
    assert told.data["budget"] == str(budget.public_id)
    assert told.data["window_start"] == "2027-03-02T05:00:00+00:00"
    assert "There is room again in the daily budget of the organization" in told.body
    hook = OutboxMessage.objects.get(channel="webhook", event_type="budget.recovered")
    assert hook.payload["type"] == "budget.recovered"
    # The day after the recovered one was not exhausted: no recovery on 3 March.
    assert budgets_recovered_check(now=at(NEW_YORK, 2027, 3, 3, 0, 0)) == []
    # The task (beat runs it every minute) calls the same check.
    assert tasks.budgets_recovered_check.delay().get() == 0


def test_the_database_refuses_a_second_recovery_of_the_same_window(tenant):
    budget = _budget(tenant, "daily", "1")
    start = at(UTC, 2027, 3, 2)
    fields = {
        "organization": tenant.org, "budget": budget, "window_start": start,
        "type": Alert.Type.RECOVERED, "spent": 0, "limit": 1,
    }  # fmt: skip
    Alert.objects.create(**fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(**fields)
    # A forecast of the same window is another event; a threshold of it another constraint.
    Alert.objects.create(**{**fields, "type": Alert.Type.FORECAST_EXCEEDED})
    Alert.objects.create(**{**fields, "type": Alert.Type.EXHAUSTED, "threshold": 100})
    with pytest.raises(IntegrityError), transaction.atomic():  # a recovery has no threshold
        Alert.objects.create(**{**fields, "window_start": start + timedelta(1), "threshold": 5})


def test_a_monthly_budget_recovers_on_the_first_in_kolkata_after_29_february(tenant):
    _zone(tenant, "Asia/Kolkata")
    tenant.grant("100")
    budget = _budget(tenant, "monthly", "5")
    _spend(tenant, "a", "5", at(KOLKATA, 2028, 2, 29, 23, 0))
    assert len(_alerts(budget, Alert.Type.EXHAUSTED)) == 1
    # 1 March 00:00 in Kolkata is 29 February 18:30 UTC.
    assert budgets_recovered_check(now=at(UTC, 2028, 2, 29, 18, 29, 59)) == []
    (recovered,) = budgets_recovered_check(now=at(UTC, 2028, 2, 29, 18, 30))
    assert recovered.window_start == at(KOLKATA, 2028, 3, 1).astimezone(UTC)
    assert budgets_recovered_check(now=at(UTC, 2028, 2, 29, 18, 31)) == []


def test_a_key_limit_recovers_at_midnight_utc_whatever_the_organizations_zone(tenant):
    """OpenRouter key limits (`limit_reset`) have UTC windows, so they recover at 00:00 UTC."""
    _zone(tenant, "America/New_York")
    tenant.grant("100")
    key, _ = tenant.key("usage", limit="1", limit_reset="daily")
    with mock.patch("django.utils.timezone.now", return_value=at(UTC, 2027, 3, 1, 20, 0)):
        usage_record(
            attribution=Attribution.of_key(key),
            event=UsageInput(id="k", model="gpt-4o", cost=Decimal("1")),
        )
    (exhausted,) = Alert.objects.filter(type=Alert.Type.EXHAUSTED)
    assert exhausted.window_start == at(UTC, 2027, 3, 1)
    assert budgets_recovered_check(now=at(UTC, 2027, 3, 1, 23, 59, 59)) == []
    (recovered,) = budgets_recovered_check(now=at(UTC, 2027, 3, 2, 0, 0))
    assert recovered.budget_id == exhausted.budget_id
    assert recovered.window_start == at(UTC, 2027, 3, 2)  # 19:00 in New York


def test_a_soft_budget_warns_and_so_never_recovers(tenant):
    _zone(tenant, "America/New_York")
    tenant.grant("100")
    budget = _budget(tenant, "daily", "1", mode="soft", grace="1")
    _spend(tenant, "a", "1.5", at(NEW_YORK, 2027, 3, 1, 18, 0))  # past 100 %: allowed, warned
    assert [a.threshold for a in _alerts(budget, Alert.Type.THRESHOLD_CROSSED)] == [75, 90, 100]
    assert _alerts(budget, Alert.Type.EXHAUSTED) == []
    assert budgets_recovered_check(now=at(NEW_YORK, 2027, 3, 2, 0, 0)) == []


def test_a_lifetime_budget_never_recovers(tenant):
    tenant.grant("100")
    budget = _budget(tenant, "lifetime", "1")
    _spend(tenant, "a", "1", at(UTC, 2027, 3, 1, 12))
    assert len(_alerts(budget, Alert.Type.EXHAUSTED)) == 1
    for later in (at(UTC, 2027, 3, 2), at(UTC, 2027, 4, 1), at(UTC, 2030, 1, 1)):
        assert budgets_recovered_check(now=later) == []
    assert _alerts(budget, Alert.Type.RECOVERED) == []


# The forecast and budget.forecast_exceeded --------------------------------------------------


def test_the_forecast_projects_each_budget_to_the_end_of_its_window(tenant):
    _zone(tenant, "Europe/Berlin")
    tenant.grant("100")
    daily = _budget(tenant, "daily", "10")
    lifetime = _budget(tenant, "lifetime", "50")
    _spend(tenant, "a", "6", at(BERLIN, 2027, 3, 10, 11, 0))
    _, secret = tenant.key("management")
    noon = at(BERLIN, 2027, 3, 10, 12, 0)
    with mock.patch("django.utils.timezone.now", return_value=noon):
        body = tenant.client(secret).get("/api/v1/credits/forecast").json()
    budgets = {b["id"]: b for b in body["budgets"]}
    d = budgets[str(daily.public_id)]
    assert d["window_start"] == "2027-03-09T23:00:00Z"  # Berlin midnight (UTC+1)
    assert d["window_end"] == "2027-03-10T23:00:00Z"
    assert Decimal(d["spent"]) == 6 and Decimal(d["held"]) == 0 and Decimal(d["limit"]) == 10
    # 6 credits in the 12 hours passed: 0.5 an hour, for the 12 hours left.
    assert Decimal(d["rate_per_hour"]) == Decimal("0.5")
    assert Decimal(d["projected"]) == 12 and d["exceeds"] is True
    life = budgets[str(lifetime.public_id)]
    assert life["window_end"] is None and life["projected"] is None
    assert life["rate_per_hour"] is None and life["exceeds"] is False
    assert Decimal(life["spent"]) == 6


def test_a_team_key_forecasts_the_budgets_it_sees_only(tenant):
    tenant.grant("100")
    other = team_create(organization=tenant.org, slug="other", name="Other", actor=SYSTEM)
    mine = _budget_on(tenant, "team", team=tenant.team)
    _budget_on(tenant, "team", team=other)
    _, secret = tenant.key("usage", team=tenant.team)
    body = tenant.client(secret).get("/api/v1/credits/forecast").json()
    assert [b["id"] for b in body["budgets"]] == [str(mine.public_id)]


def _budget_on(tenant, scope: str, **target):
    return budget_create(
        organization=tenant.org, scope=scope, period="weekly", limit="5", actor=SYSTEM, **target
    )


def test_forecast_exceeded_fires_once_per_window_for_hard_and_soft_budgets(tenant):
    _zone(tenant, "Europe/Berlin")
    tenant.grant("100")
    hard = _budget(tenant, "daily", "10")
    soft_over = _budget(tenant, "daily", "11", mode="soft", grace="5")
    soft_fine = _budget(tenant, "daily", "20", mode="soft", grace="5")
    _spend(tenant, "a", "6", at(BERLIN, 2027, 3, 10, 11, 0))
    noon = at(BERLIN, 2027, 3, 10, 12, 0)  # all three project 12 credits at midnight
    fired = budgets_forecast_check(now=noon)
    assert {a.budget_id for a in fired} == {hard.pk, soft_over.pk}
    assert all(a.threshold is None and a.spent == 6 for a in fired)
    assert {a.window_start for a in fired} == {at(BERLIN, 2027, 3, 10).astimezone(UTC)}
    assert budgets_forecast_check(now=noon + timedelta(hours=1)) == []  # the check runs twice
    assert _alerts(soft_fine, Alert.Type.FORECAST_EXCEEDED) == []
    told = Notification.objects.filter(recipient=tenant.owner, type="budget.forecast_exceeded")
    assert told.count() == 2
    note = told.get(data__budget=str(hard.public_id))
    assert note.data["projected"] == "12.000000000000"
    assert note.data["window_end"] == "2027-03-10T23:00:00+00:00"
    assert note.body.startswith("Spending is forecast to pass the daily budget of the organization")
    # The body in the organization's words: rounded credits, the end in Berlin time.
    assert "12.0000 credits by the end of the window (2027-03-11 00:00 CET)" in note.body

    # The next Berlin day is a new window: nothing spent, nothing projected; spending fast
    # early on fires again, in that window.
    assert budgets_forecast_check(now=at(BERLIN, 2027, 3, 11, 0, 0)) == []
    _spend(tenant, "b", "4", at(BERLIN, 2027, 3, 11, 3, 0))
    again = budgets_forecast_check(now=at(BERLIN, 2027, 3, 11, 4, 0))  # 4 + 1 x 20 = 24
    assert {a.budget_id for a in again} == {hard.pk, soft_over.pk, soft_fine.pk}
    assert len(_alerts(hard, Alert.Type.FORECAST_EXCEEDED)) == 2
    assert len(_alerts(soft_fine, Alert.Type.FORECAST_EXCEEDED)) == 1


def test_early_in_a_window_a_tenth_of_it_counts_as_passed(tenant):
    tenant.grant("100")
    budget = _budget(tenant, "daily", "10")
    _spend(tenant, "a", "0.5", at(UTC, 2027, 3, 10, 0, 20))
    # At 00:30, 0.5 credits over half an hour would be 12 by midnight; over 2.4 hours (a tenth
    # of the day) it is 0.5 + 0.5 / 2.4 x 23.5 = 5.4.
    assert budgets_forecast_check(now=at(UTC, 2027, 3, 10, 0, 30)) == []
    # At 03:00 the window's own rate: 0.5 / 3 x 21 + 0.5 = 4.
    assert budgets_forecast_check(now=at(UTC, 2027, 3, 10, 3, 0)) == []
    _spend(tenant, "b", "2", at(UTC, 2027, 3, 10, 3, 30))
    (fired,) = budgets_forecast_check(now=at(UTC, 2027, 3, 10, 4, 0))  # 2.5 / 4 x 20 + 2.5
    assert fired.budget_id == budget.pk


def test_a_budget_at_its_limit_already_is_not_forecast(tenant):
    tenant.grant("100")
    budget = _budget(tenant, "daily", "1")
    _spend(tenant, "a", "1", at(UTC, 2027, 3, 10, 6, 0))
    assert len(_alerts(budget, Alert.Type.EXHAUSTED)) == 1  # the exhausted alert told it
    assert budgets_forecast_check(now=at(UTC, 2027, 3, 10, 7, 0)) == []
    assert BudgetWindow.objects.get(budget=budget, window_start=at(UTC, 2027, 3, 10)).spent == 1
