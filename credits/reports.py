"""Reads behind the credits pages: spend grouped by day, hour of day and dimension in the
organization's time zone, trailing-window sums, the usage explorer's rows and
the CSV export's rows. Every read starts from `usage_visible(principal)`, so a page shows only
what the same principal may read over the API."""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal

from django.db.models import QuerySet
from django.utils import timezone

from accounts.access import Principal
from accounts.models import ApiKey, Membership, Organization

from .models import UsageEvent
from .rollups import first_usage, usage_sums_visible
from .selectors import COUNTED, usage_visible

ZERO = Decimal(0)

# The dimensions of the spend-over-time chart and the column each groups by.
SPEND_DIMENSIONS = {"team": "team__name", "model": "model", "operation": "operation"}


def organization_tz(organization: Organization) -> tzinfo:
    """The organization's IANA time zone (UTC when unknown)."""
    try:
        return organization.zone
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def _counted(principal: Principal, start: datetime, end: datetime) -> QuerySet[UsageEvent]:
    return usage_visible(principal).filter(COUNTED, occurred_at__gte=start, occurred_at__lt=end)


def spend_by_day(
    *, principal: Principal, start: datetime, end: datetime, tz: tzinfo, dimension: str | None
) -> list[dict]:
    """Rows of `day` (a date in `tz`), `key` (the dimension's value; None without one), `events`
    and `cost`, for counted usage between `start` and `end` (rollups and their tail:
    `credits.rollups.usage_sums`), by day."""
    field = SPEND_DIMENSIONS[dimension] if dimension else None
    rows = usage_sums_visible(
        principal, start=start, end=end, fields=[field] if field else [], time="day", tz=tz
    )
    out = [
        {
            "day": r["day"].astimezone(tz).date(),
            "key": r[field] if field else None,
            "events": r["events"],
            "cost": r["cost"],
        }
        for r in rows
    ]
    return sorted(out, key=lambda r: (r["day"], r["key"] is None, r["key"] or ""))


def spend_by_hour(*, principal: Principal, start: datetime, end: datetime, tz: tzinfo) -> list:
    """Rows of `hour` (0-23 in `tz`), `events` and `cost`, by hour."""
    rows = usage_sums_visible(principal, start=start, end=end, time="hour", tz=tz)
    return sorted(
        ({"hour": r["hour"], "events": r["events"], "cost": r["cost"]} for r in rows),
        key=lambda r: r["hour"],
    )


def spend_in_windows(
    *, principal: Principal, now: datetime
) -> tuple[dict[str, Decimal], int | None]:
    """Credits spent in the trailing 24 hours, 7 days and 30 days (keys "24h", "7d", "30d"), and
    the whole hours since the first usage the principal sees in the last 30 days (None: none).
    Four statements (rollups and their tail: `credits.rollups.usage_sums`)."""
    end = now + timedelta(seconds=1)
    spent: dict[str, Decimal] = {}
    first = None
    for name, since in (("24h", timedelta(hours=24)), ("7d", timedelta(days=7))):
        rows = usage_sums_visible(principal, start=now - since, end=end)
        spent[name] = rows[0]["cost"] if rows else ZERO
    rows = usage_sums_visible(principal, start=now - timedelta(days=30), end=end, first=True)
    spent["30d"] = rows[0]["cost"] if rows else ZERO
    if rows:
        first = first_usage(
            principal.organization,
            visible=principal.row_filter(),
            after=max(rows[0]["first"], now - timedelta(days=30)),
            end=end,
        )
    observed = None if first is None else int((now - first).total_seconds() // 3600) + 1
    return spent, observed


# Identities ----------------------------------------------------------------------------------


class Identities:
    """Which member e-mails and key names `principal` may see (`sees_member`, `sees_key`),
    decided once per member and per key of the organization."""

    def __init__(self, principal: Principal):
        self.principal = principal
        self._members: dict[int | None, bool] = {}
        self._keys: dict[int, bool] | None = None

    def member(self, user_id: int | None) -> bool:
        if user_id not in self._members:
            self._members[user_id] = self.principal.sees_member(user_id)
        return self._members[user_id]

    def key(self, key_id: int | None) -> bool:
        if key_id is None:
            return True
        if self._keys is None:
            keys = ApiKey.objects.filter(organization=self.principal.organization)
            self._keys = {k.pk: self.principal.sees_key(k) for k in keys}
        return self._keys.get(key_id, False)

    def member_choices(self) -> list[tuple[str, str]]:
        """Members the principal may name, as (id, e-mail) for a filter."""
        memberships = Membership.objects.filter(
            organization=self.principal.organization
        ).select_related("user")
        return [
            (str(m.user_id), m.user.email)
            for m in memberships.order_by("user__email")
            if self.member(m.user_id)
        ]

    def key_choices(self) -> list[tuple[str, str]]:
        """Keys the principal may name, as (id, name) for a filter."""
        keys = ApiKey.objects.filter(organization=self.principal.organization).order_by("name")
        return [(str(k.pk), k.name) for k in keys if self.key(k.pk)]


# The explorer and its export ----------------------------------------------------------------

EXPORT_COLUMNS = (
    "occurred_at",
    "event_id",
    "model",
    "operation",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
    "team",
    "key",
    "member",
    "conversation_id",
)
_EXPORT_FIELDS = (
    "occurred_at",
    "event_id",
    "model",
    "operation",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
    "team__slug",
    "api_key_id",
    "api_key__name",
    "member_id",
    "member__email",
    "conversation_id",
)


def export_rows(
    qs: QuerySet[UsageEvent], *, principal: Principal, tz: tzinfo, chunk_size: int = 2000
) -> Iterator[tuple]:
    """The rows of `qs` for the CSV export, newest first, read through a server-side cursor in
    chunks (constant memory for any number of rows), with key names and member e-mails the
    principal may not see left blank. Times are ISO 8601 in `tz`."""
    identities = Identities(principal)
    rows = qs.order_by("-occurred_at", "-id").values_list(*_EXPORT_FIELDS)
    for (
        occurred_at,
        event_id,
        model,
        operation,
        prompt,
        completion,
        cached,
        reasoning,
        cost,
        team,
        key_id,
        key_name,
        member_id,
        member_email,
        conversation,
    ) in rows.iterator(chunk_size=chunk_size):
        yield (
            timezone.localtime(occurred_at, tz).isoformat(),
            event_id,
            model,
            operation,
            prompt,
            completion,
            cached,
            reasoning,
            cost,
            team or "",
            key_name if key_id is not None and identities.key(key_id) else "",
            member_email if member_id is not None and identities.member(member_id) else "",
            conversation,
        )
