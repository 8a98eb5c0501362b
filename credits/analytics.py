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
