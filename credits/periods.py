"""Calendar windows in UTC (weeks start on Monday). Spend in a window is counted from the
window's start; nothing is "reset" by a job."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

PERIODS = ("daily", "weekly", "monthly")


def window_start(period: str | None, now: datetime) -> datetime | None:
    """Start (UTC) of the `period` window containing `now`: daily, weekly (Monday), monthly;
    None for lifetime / no period."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    return None


def window_end(period: str, now: datetime) -> datetime:
    """End (exclusive, UTC) of the `period` window containing `now`."""
    start = window_start(period, now)
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the one window of a lifetime budget starts here


def window_bounds(
    period: str, now: datetime, time_zone: str = "UTC"
) -> tuple[datetime, datetime | None]:
    """(start, end) in UTC of the calendar window of `period` (daily, weekly from Monday,
    monthly; lifetime: (EPOCH, None)) that contains `now`, with days counted in the IANA
    `time_zone`: a Berlin day starts at 00:00 Berlin time, whatever the UTC offset that day
    (a day across a DST change lasts 23 or 25 hours). The end is exclusive."""
    if period not in PERIODS:
        return EPOCH, None
    tz = ZoneInfo(time_zone or "UTC")
    day = now.astimezone(tz).date()
    if period == "daily":
        first, last = day, day + timedelta(days=1)
    elif period == "weekly":
        first = day - timedelta(days=day.weekday())
        last = first + timedelta(days=7)
    else:
        first = day.replace(day=1)
        last = (first + timedelta(days=32)).replace(day=1)

    def midnight(d):
        return datetime.combine(d, time(0), tzinfo=tz).astimezone(UTC)

    return midnight(first), midnight(last)
