"""Calendar windows in UTC (weeks start on Monday). Spend in a window is counted from the
window's start; nothing is "reset" by a job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
