"""Reads of the credits app, each scoped to one organization (or one key of it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import ApiKey, Organization, Team
from portal.errors import NotFound

from .models import CreditLot, Hold, LedgerAccount, LedgerEntry, UsageEvent
from .periods import window_start

ZERO = Decimal(0)
Kind = LedgerAccount.Kind


def account_list(*, organization: Organization) -> QuerySet[LedgerAccount]:
    return LedgerAccount.objects.filter(organization=organization).select_related("team")


def account_get(*, organization: Organization, pk: int) -> LedgerAccount:
    """Raises NotFound (404) for an unknown id or another organization's account."""
    account = account_list(organization=organization).filter(pk=pk).first()
    if account is None:
        raise NotFound("No such account in this organization.", resource="account")
    return account


def account_balance(account: LedgerAccount) -> Decimal:
    """The balance of any account: cached for spendable and source accounts, the sum of entries
    for sinks (which are never updated on the hot path)."""
    if account.kind in LedgerAccount.SINKS:
        return account.entries.aggregate(s=Sum("amount"))["s"] or ZERO
    return account.balance


def account_history(*, organization: Organization, account_id: int) -> QuerySet[LedgerEntry]:
    """The entries of one of `organization`'s accounts, newest first. Raises NotFound."""
    account = account_get(organization=organization, pk=account_id)
    return LedgerEntry.objects.filter(account=account).select_related("transaction", "lot")


def with_running_balance(entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """Set `running_balance` (the account's balance right after each entry) on a page of one
    account's entries ordered newest first: one aggregate for the page's newest entry, then
    back down the page."""
    if not entries:
        return entries
    top = entries[0]
    running = (
        LedgerEntry.objects.filter(account_id=top.account_id, id__lte=top.pk).aggregate(
            s=Sum("amount")
        )["s"]
        or ZERO
    )
    for entry in entries:
        entry.running_balance = running
        running -= entry.amount
    return entries


def lot_list(*, organization: Organization) -> QuerySet[CreditLot]:
    return CreditLot.objects.filter(organization=organization).select_related("account__team")


def usage_list(*, organization: Organization) -> QuerySet[UsageEvent]:
    return UsageEvent.objects.filter(organization=organization).select_related(
        "team", "member", "api_key"
    )


def usage_for_key(key: ApiKey) -> QuerySet[UsageEvent]:
    """The usage a key may see: all of its organization's for a key of no member and no team;
    otherwise its own events and those of the teams it may see."""
    from accounts.selectors import teams_visible_to_key

    usage = usage_list(organization=key.organization)
    if key.team_id is None and key.user_id is None:
        return usage
    return usage.filter(Q(team__in=teams_visible_to_key(key)) | Q(api_key=key))


def usage_event_get(*, key: ApiKey, event_id: str) -> UsageEvent:
    """One usage event the key may see, by its client id. Raises NotFound (404)."""
    event = usage_for_key(key).filter(event_id=event_id).first()
    if event is None:
        raise NotFound(f"No usage event '{event_id}' in this organization.", resource="generation")
    return event


def hold_get(*, organization: Organization, pk: int) -> Hold:
    hold = (
        Hold.objects.filter(organization=organization, pk=pk)
        .select_related("account", "organization", "api_key", "team", "member")
        .first()
    )
    if hold is None:
        raise NotFound("No such authorization in this organization.", resource="authorization")
    return hold


@dataclass(frozen=True)
class KeyUsage:
    total: Decimal = ZERO
    daily: Decimal = ZERO
    weekly: Decimal = ZERO
    monthly: Decimal = ZERO
    in_limit_window: Decimal = ZERO


def _spend_sums(field: str, now: datetime) -> dict:
    return {
        "total": Coalesce(Sum("cost"), ZERO),
        "daily": Coalesce(
            Sum("cost", filter=Q(**{f"{field}__gte": window_start("daily", now)})), ZERO
        ),
        "weekly": Coalesce(
            Sum("cost", filter=Q(**{f"{field}__gte": window_start("weekly", now)})), ZERO
        ),
        "monthly": Coalesce(
            Sum("cost", filter=Q(**{f"{field}__gte": window_start("monthly", now)})), ZERO
        ),
    }


def key_usage_totals(keys: Iterable[ApiKey], now: datetime | None = None) -> dict[int, KeyUsage]:
    """Credits each key spent: in total and in the current UTC day, week (Monday) and month, by
    the time usage was recorded (one query for all keys)."""
    now = now or timezone.now()
    keys = list(keys)
    rows = (
        UsageEvent.objects.filter(api_key__in=keys)
        .values("api_key")
        .annotate(**_spend_sums("recorded_at", now))
    )
    by_key = {r["api_key"]: r for r in rows}
    result = {}
    for key in keys:
        r = by_key.get(key.pk, {})
        totals = {p: r.get(p, ZERO) for p in ("total", "daily", "weekly", "monthly")}
        window = {"daily": "daily", "weekly": "weekly", "monthly": "monthly"}.get(
            key.limit_reset, "total"
        )
        result[key.pk] = KeyUsage(**totals, in_limit_window=totals[window])
    return result


@dataclass(frozen=True)
class TeamBalance:
    team: Team
    funding: str
    balance: Decimal
    held: Decimal
    available: Decimal
    used: Decimal
    used_today: Decimal
    used_this_month: Decimal


@dataclass(frozen=True)
class BalanceSummary:
    """An organization's credits: what came in, what was used, what is left and where."""

    total_credited: Decimal
    total_used: Decimal
    total_expired: Decimal
    balance: Decimal
    held: Decimal
    available: Decimal
    used_today: Decimal
    used_this_month: Decimal
    expiring_30_days: Decimal
    pool_balance: Decimal
    pool_available: Decimal
    teams: list[TeamBalance]


def balance_summary(
    *, organization: Organization, teams: QuerySet[Team] | None = None, now: datetime | None = None
) -> BalanceSummary:
    """The organization's balance summary, per team for `teams` (default: all). O(accounts +
    one aggregate over the usage index)."""
    now = now or timezone.now()
    accounts = list(account_list(organization=organization))
    spendable = [a for a in accounts if a.kind in LedgerAccount.HOLDS_LOTS]
    credited = -sum((a.balance for a in accounts if a.kind in (Kind.GRANTS, Kind.PURCHASES)), ZERO)
    expired_acc = next((a for a in accounts if a.kind == Kind.EXPIRY), None)
    usage = usage_list(organization=organization)
    totals = usage.aggregate(**_spend_sums("occurred_at", now))
    by_team = {
        r["team"]: r
        for r in usage.filter(team__isnull=False)
        .values("team")
        .annotate(**_spend_sums("occurred_at", now))
    }
    expiring = (
        CreditLot.objects.filter(
            organization=organization,
            remaining__gt=0,
            account__kind__in=LedgerAccount.HOLDS_LOTS,
            expires_at__gt=now,
            expires_at__lte=now + timedelta(days=30),
        ).aggregate(s=Sum("remaining"))["s"]
        or ZERO
    )
    pool = next((a for a in accounts if a.kind == Kind.POOL), None)
    team_accounts = {a.team_id: a for a in accounts if a.kind == Kind.TEAM}
    team_rows = []
    for team in teams if teams is not None else Team.objects.filter(organization=organization):
        account = team_accounts.get(team.pk) if team.funding == Team.Funding.ALLOCATION else pool
        used = by_team.get(team.pk, {})
        team_rows.append(
            TeamBalance(
                team=team,
                funding=team.funding,
                balance=account.balance if account else ZERO,
                held=account.held if account else ZERO,
                available=account.available if account else ZERO,
                used=used.get("total", ZERO),
                used_today=used.get("daily", ZERO),
                used_this_month=used.get("monthly", ZERO),
            )
        )
    balance = sum((a.balance for a in spendable), ZERO)
    held = sum((a.held for a in spendable), ZERO)
    return BalanceSummary(
        total_credited=credited,
        total_used=totals["total"],
        total_expired=account_balance(expired_acc) if expired_acc else ZERO,
        balance=balance,
        held=held,
        available=balance - held,
        used_today=totals["daily"],
        used_this_month=totals["monthly"],
        expiring_30_days=expiring,
        pool_balance=pool.balance if pool else ZERO,
        pool_available=pool.available if pool else ZERO,
        teams=team_rows,
    )


REPORT_DIMENSIONS = {
    "operation": "operation",
    "team": "team__slug",
    "member": "member__email",
    "model": "model",
    "conversation": "conversation_id",
    "key": "api_key__name",
}


def usage_report(
    *,
    organization: Organization,
    period: str,
    start: datetime,
    end: datetime,
    teams: QuerySet[Team] | None = None,
    top: int = 50,
) -> dict:
    """Usage between `start` and `end` (UTC, by occurred_at): totals, a series per `period`
    bucket (daily, weekly from Monday, monthly) and breakdowns by operation, team, member,
    model, conversation and key (the `top` largest by cost)."""
    from django.db.models.functions import TruncDay, TruncMonth, TruncWeek

    qs = usage_list(organization=organization).filter(occurred_at__gte=start, occurred_at__lt=end)
    if teams is not None:
        qs = qs.filter(team__in=teams)
    sums = {
        "events": Count("id"),
        "cost": Coalesce(Sum("cost"), ZERO),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
        "cached_tokens": Coalesce(Sum("cached_tokens"), 0),
        "reasoning_tokens": Coalesce(Sum("reasoning_tokens"), 0),
    }
    trunc = {"daily": TruncDay, "weekly": TruncWeek, "monthly": TruncMonth}[period]
    series = [
        {"start": r["bucket"], **{k: r[k] for k in sums}}
        for r in qs.annotate(bucket=trunc("occurred_at"))
        .values("bucket")
        .annotate(**sums)
        .order_by("bucket")
    ]
    breakdowns = {}
    for name, field in REPORT_DIMENSIONS.items():
        rows = qs.values(field).annotate(**sums).order_by("-cost", field)[:top]
        breakdowns[name] = [{"key": r[field], **{k: r[k] for k in sums}} for r in rows]
    return {
        "period": period,
        "start": start,
        "end": end,
        "totals": qs.aggregate(**sums),
        "series": series,
        "breakdowns": breakdowns,
    }
