"""The dashboard's analytics as pure functions: burn rates, the depletion projection and the rate
it chooses, spend by hour of day, stacked series by dimension."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from credits.analytics import (
    OTHERS,
    burn_rates,
    peak_hour,
    project_depletion,
    runway_days,
    spend_by_hour_of_day,
    stacked_series,
)

D = Decimal
TODAY = date(2025, 3, 10)


def rates(day="0", week="0", month="0", observed=24 * 30):
    return burn_rates({"24h": D(day), "7d": D(week), "30d": D(month)}, observed)


def test_rates_per_hour_and_per_day():
    day, week, month = rates("48", "168", "720")
    assert (day.per_hour, day.per_day) == (D(2), D(48))
    assert (week.per_hour, week.per_day) == (D(1), D(24))
    assert (month.per_hour, month.per_day) == (D(1), D(24))
    assert not any(r.partial for r in (day, week, month))


def test_a_young_history_divides_by_the_hours_observed():
    """An organization with 2 days of usage: its 7- and 30-day rates are over 48 hours."""
    day, week, month = rates("10", "20", "20", observed=48)
    assert week.hours == month.hours == 48 and week.per_day == D(10) and week.partial
    assert day.hours == 24 and not day.partial
    assert rates("1", "1", "1", observed=None)[2].hours == 720  # no usage: the whole window


def test_projection_uses_the_7_day_rate_by_default():
    p = project_depletion(D("70"), rates("1", "7", "60"), TODAY)  # 1/day over the week
    assert p.rate.name == "7d" and p.days == D(70)
    assert p.depletes_on == TODAY + timedelta(days=70)
    assert "7-day" in p.reason


def test_projection_follows_a_surge_of_the_last_24_hours():
    p = project_depletion(D("100"), rates("20", "35", "100"), TODAY)  # 20/day vs 5/day
    assert p.rate.name == "24h" and p.days == D(5) and "surge" in p.reason
    # Just below twice the 7-day rate: still the 7-day rate.
    assert project_depletion(D("100"), rates("9.99", "35"), TODAY).rate.name == "7d"


def test_projection_falls_back_to_30_days_then_none():
    p = project_depletion(D("30"), rates("0", "0", "30"), TODAY)
    assert p.rate.name == "30d" and p.days == D(30) and "30-day" in p.reason
    none = project_depletion(D("30"), rates(), TODAY)
    assert none.rate is None and none.days is None and none.depletes_on is None


def test_projection_of_an_empty_or_overdrawn_balance_is_today():
    p = project_depletion(D("-5"), rates("1", "7"), TODAY)
    assert p.days == 0 and p.depletes_on == TODAY


def test_projection_floors_partial_days():
    p = project_depletion(D("10"), rates("3", "21"), TODAY)  # 3.33 days at 3/day
    assert p.depletes_on == TODAY + timedelta(days=3)


def test_spend_by_hour_of_day_fills_the_gaps():
    hours = spend_by_hour_of_day(
        [{"hour": 9, "events": 2, "cost": D("1.5")}, {"hour": 23, "events": 1, "cost": D("3")}]
    )
    assert len(hours) == 24 and [h.hour for h in hours] == list(range(24))
    assert hours[9].cost == D("1.5") and hours[0].cost == 0 and hours[23].events == 1
    assert peak_hour(hours).hour == 23
    assert peak_hour(spend_by_hour_of_day([])) is None


def test_peak_hour_ties_go_to_the_earliest():
    hours = spend_by_hour_of_day([{"hour": h, "events": 1, "cost": D(1)} for h in (14, 3)])
    assert peak_hour(hours).hour == 3


def test_stacked_series_top_keys_and_others():
    days = [TODAY - timedelta(days=1), TODAY]
    rows = [
        {"day": days[0], "key": "a", "cost": D("5")},
        {"day": days[1], "key": "a", "cost": D("1")},
        {"day": days[1], "key": "b", "cost": D("4")},
        {"day": days[0], "key": "c", "cost": D("0.5")},
        {"day": days[1], "key": None, "cost": D("0.25")},
        {"day": TODAY - timedelta(days=9), "key": "a", "cost": D("100")},  # outside the days
    ]
    series = stacked_series(rows, days, top=2)
    assert [s["label"] for s in series] == ["a", "b", OTHERS]
    assert series[0]["data"] == ["5", "1"]
    assert series[2]["data"] == ["0.5", "0.25"]  # c and (none) together
    # Exact decimal strings, never floats.
    assert all(isinstance(v, str) for s in series for v in s["data"])
    assert [s["label"] for s in stacked_series(rows[:3], days, top=5)] == ["a", "b"]


def test_runway_days():
    assert runway_days(D("100"), D("30"), 30) == 100
    assert runway_days(D("100"), D("0"), 30) is None
