"""Analytics over usage: daily spend series and runway (how long credits last)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_FLOOR, Decimal

ZERO = Decimal(0)


@dataclass(frozen=True)
class DailySpend:
    day: date
    events: int
    cost: Decimal


def daily_spend(series: list[dict], first: date, days: int) -> list[DailySpend]:
    """`usage_report`'s daily series with a zero row for each UTC day without usage."""
    by_day = {row["start"].date(): row for row in series}
    out = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row = by_day.get(day, {})
        out.append(DailySpend(day, row.get("events", 0), row.get("cost", ZERO)))
    return out


def runway_days(available: Decimal, spent: Decimal, days: int) -> int | None:
    """Whole days `available` lasts at the average daily spend of the last `days`; None when
    nothing was spent."""
    if spent <= 0:
        return None
    return int((max(available, ZERO) * days / spent).to_integral_value(rounding=ROUND_FLOOR))


# Burn rates and the projection --------------------------------------------------------------

# The last 24 hours replace the 7-day rate in the projection when they run at least this many
# times faster: a surge is what will empty the balance first.
SURGE = Decimal(2)
RATE_WINDOWS = (
    ("24h", "last 24 hours", 24),
    ("7d", "last 7 days", 24 * 7),
    ("30d", "last 30 days", 24 * 30),
)


@dataclass(frozen=True)
class Rate:
    """Credits spent in a trailing window, over the hours of it that had data."""

    name: str  # "24h", "7d", "30d"
    label: str
    spent: Decimal
    hours: int  # the window, or less when usage began inside it
    window: int  # the window's hours

    @property
    def partial(self) -> bool:
        """The usage history is shorter than the window."""
        return self.hours < self.window

    @property
    def per_hour(self) -> Decimal:
        return self.spent / self.hours if self.hours > 0 else ZERO

    @property
    def per_day(self) -> Decimal:
        return self.per_hour * 24


def burn_rates(spent: dict[str, Decimal], observed_hours: int | None) -> list[Rate]:
    """The 24-hour, 7-day and 30-day rates from the credits spent in each trailing window
    (`spent` keyed "24h", "7d", "30d"). A window longer than the organization's usage history
    (`observed_hours` since its first usage, at least 1; None: no usage) is divided by the hours
    observed, so a week-old organization's 30-day rate is not a quarter of its real rate."""
    rates = []
    for name, label, hours in RATE_WINDOWS:
        seen = hours if observed_hours is None else max(1, min(hours, observed_hours))
        rates.append(Rate(name, label, spent.get(name, ZERO), seen, hours))
    return rates


@dataclass(frozen=True)
class Projection:
    rate: Rate | None  # the rate the projection uses; None when nothing was spent
    reason: str
    days: Decimal | None  # how long `available` lasts at that rate
    depletes_on: date | None


def project_depletion(available: Decimal, rates: list[Rate], today: date) -> Projection:
    """When `available` runs out. The 7-day rate by default (recent enough to follow a change,
    long enough to smooth out one busy day); the last 24 hours when they run at least `SURGE`
    times the 7-day rate; the 30-day rate when the last 7 days spent nothing."""
    by_name = {r.name: r for r in rates}
    day, week, month = by_name["24h"], by_name["7d"], by_name["30d"]
    if week.per_day > 0 and day.per_day >= SURGE * week.per_day:
        rate = day
        reason = (
            f"the last 24 hours: spending runs at {SURGE}× the 7-day rate or more, and a surge "
            "that lasts empties the balance first"
        )
    elif week.per_day > 0:
        rate = week
        reason = (
            "the 7-day rate: recent enough to follow changes, long enough to smooth out one "
            "busy day"
        )
    elif month.per_day > 0:
        rate = month
        reason = "the 30-day rate: nothing was spent in the last 7 days"
    else:
        return Projection(None, "nothing was spent in the last 30 days", None, None)
    days = max(available, ZERO) / rate.per_day
    whole = int(days.to_integral_value(rounding=ROUND_FLOOR))
    return Projection(rate, reason, days, today + timedelta(days=whole))


# Series for the charts ----------------------------------------------------------------------


@dataclass(frozen=True)
class HourSpend:
    hour: int  # 0-23, in the organization's time zone
    events: int
    cost: Decimal


def spend_by_hour_of_day(rows: list[dict]) -> list[HourSpend]:
    """24 rows (hour of day, events, cost) from rows with `hour`, `events`, `cost`; hours
    without usage are zero."""
    by_hour = {row["hour"]: row for row in rows}
    return [
        HourSpend(h, by_hour.get(h, {}).get("events", 0), by_hour.get(h, {}).get("cost", ZERO))
        for h in range(24)
    ]


def peak_hour(hours: list[HourSpend]) -> HourSpend | None:
    """The hour of day with the most spend (the earliest on a tie); None without spend."""
    spent = [h for h in hours if h.cost > 0]
    return max(spent, key=lambda h: (h.cost, -h.hour)) if spent else None


OTHERS = "(others)"


def stacked_series(
    rows: list[dict], days: list[date], top: int = 5, empty: str = "(none)"
) -> list[dict]:
    """Datasets for a stacked chart of spend per day by one dimension: `rows` hold `day`
    (a date), `key` and `cost`; rows without a key are labelled `empty`. The `top` keys by total
    cost get a series each (largest first), the rest are summed into `OTHERS`. Amounts are exact
    decimal strings, one per day."""
    totals: dict[str, Decimal] = {}
    for row in rows:
        key = row["key"] if row["key"] not in (None, "") else empty
        totals[key] = totals.get(key, ZERO) + row["cost"]
    ranked = sorted(totals, key=lambda k: (-totals[k], k))
    shown = ranked[:top]
    names = shown + ([OTHERS] if len(ranked) > top else [])
    index = {d: i for i, d in enumerate(days)}
    values = {name: [ZERO] * len(days) for name in names}
    for row in rows:
        i = index.get(row["day"])
        if i is None:
            continue
        key = row["key"] if row["key"] not in (None, "") else empty
        name = key if key in shown else OTHERS
        values[name][i] += row["cost"]
    return [{"label": name, "data": [str(v) for v in values[name]]} for name in names]
