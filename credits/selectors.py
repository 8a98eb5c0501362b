"""Reads of the credits app, each scoped to one organization (or one key of it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.access import Principal
from accounts.models import ApiKey, Organization, Team
from portal.errors import NotFound
from portal.money import quantize_credits
from portal.statements import compiled, model_rows

from . import rollups
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


def account_history(*, principal: Principal, account_id: int) -> QuerySet[LedgerEntry]:
    """The entries of an account the principal may see, newest first. Raises NotFound."""
    account = account_visible_get(principal=principal, pk=account_id)
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


def lots_visible(principal: Principal) -> QuerySet[CreditLot]:
    """The lots on the accounts the principal may see."""
    return lot_list(organization=principal.organization).filter(
        account__in=accounts_visible(principal)
    )


def usage_list(*, organization: Organization) -> QuerySet[UsageEvent]:
    return UsageEvent.objects.filter(organization=organization).select_related(
        "team", "member", "api_key"
    )


# A usage event counts towards spend unless its debit was reversed (the ledger's view).
COUNTED = rollups.COUNTED


def usage_visible(principal: Principal) -> QuerySet[UsageEvent]:
    """The usage events `principal` may see (`accounts.access.Principal.row_filter`)."""
    return usage_list(organization=principal.organization).filter(principal.row_filter())


def usage_for_key(key: ApiKey) -> QuerySet[UsageEvent]:
    """The usage events an API key may see (`usage_visible` of its principal)."""
    return usage_visible(Principal.for_key(key))


def usage_event_get(*, principal: Principal, event_id: str) -> UsageEvent:
    """One usage event the principal may see, by its client id. Raises NotFound (404)."""
    event = usage_visible(principal).filter(event_id=event_id).first()
    if event is None:
        raise NotFound(f"No usage event '{event_id}' in this organization.", resource="generation")
    return event


def hold_get(*, principal: Principal, id: str) -> Hold:
    """A hold the principal may see, by its public id (a UUID) or the client's `id`. A hold of
    another team, member or organization raises NotFound (404)."""
    holds = Hold.objects.filter(organization=principal.organization).filter(principal.row_filter())
    try:
        by_id = Q(public_id=uuid.UUID(id)) | Q(idempotency_key=id)
    except ValueError:
        by_id = Q(idempotency_key=id)
    hold = (
        holds.filter(by_id)
        .select_related("account", "organization", "api_key", "team", "member")
        .first()
    )
    if hold is None:
        raise NotFound("No such authorization in this organization.", resource="authorization")
    return hold


def accounts_visible(principal: Principal) -> QuerySet[LedgerAccount]:
    """Every account for a principal of the whole organization; else the accounts of the teams
    it may see that have their own allocation (a pool-funded team's balance is shown as what it
    can draw on, not as the pool's history)."""
    accounts = account_list(organization=principal.organization)
    if principal.org_wide:
        return accounts
    return accounts.filter(kind=Kind.TEAM, team__in=principal.teams())


def account_visible_get(*, principal: Principal, pk: int) -> LedgerAccount:
    account = accounts_visible(principal).filter(pk=pk).first()
    if account is None:
        raise NotFound("No such account in this organization.", resource="account")
    return account


@dataclass(frozen=True)
class KeyUsage:
    total: Decimal = ZERO
    daily: Decimal = ZERO
    weekly: Decimal = ZERO
    monthly: Decimal = ZERO


_PERIODS = ("daily", "weekly", "monthly")
_USED_ZERO = {"total": ZERO, **{p: ZERO for p in _PERIODS}}


def _used_by(
    organization, field: str, now: datetime, *, visible: Q | None = None, where: Q | None = None
) -> dict:
    """Counted usage of `organization` that `visible` and `where` let through, per value of
    `field` (`team`, `api_key`, ...): dicts of `total` and of `daily`, `weekly`, `monthly`, the
    usage since the start of the current UTC day, week (Monday) and month, by when it occurred
    (credits). One read of the usage rollups and their tail (`credits.rollups.usage_sums`),
    whatever the history; values without usage are left out."""
    since = {p: window_start(p, now) for p in _PERIODS}
    rows = rollups.usage_sums(
        organization=organization, visible=visible, where=where, since=since, fields=[field]
    )
    return {r[field]: {"total": r["cost"], **{p: r[f"cost_{p}"] for p in _PERIODS}} for r in rows}


def key_usage_totals(keys: Iterable[ApiKey], now: datetime | None = None) -> dict[int, KeyUsage]:
    """Credits each key spent (reversed usage left out): in total and since the start of the
    current UTC day, week (Monday) and month, by when the usage occurred, as the balance's
    `used_today` and `used_this_month` (`_used_by`). One read of the usage rollups and their
    tail per organization among `keys`, whatever the keys' history: it summed their raw events
    (30 ms for a key of 250,000 events, docs/performance.md, run 13). Keys without usage get
    zeros."""
    now = now or timezone.now()
    keys = list(keys)
    by_key: dict = {}
    for organization_id in {key.organization_id for key in keys}:
        of_it = [key for key in keys if key.organization_id == organization_id]
        where = Q(api_key__in=sorted(key.pk for key in of_it))
        by_key.update(_used_by(of_it[0].organization, "api_key", now, where=where))
    return {key.pk: KeyUsage(**by_key.get(key.pk, _USED_ZERO)) for key in keys}


def _used_by_team(organization, visible: Q | None, now: datetime) -> tuple[dict, dict]:
    """Counted usage that `visible` lets through (None: all), as `_used_by`: the totals and
    the same per team id."""
    by_team = _used_by(organization, "team", now, visible=visible)
    totals = {k: sum((r[k] for r in by_team.values()), ZERO) for k in _USED_ZERO}
    by_team.pop(None, None)
    return totals, by_team


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
    """An organization's credits: what came in, what was used, what is left and where. For a
    principal bound to a team or a member (`balance_for`), the figures are those of what it can
    draw on and the usage it sees, and the organization-only ones are None."""

    total_credited: Decimal | None
    total_used: Decimal
    total_expired: Decimal | None
    balance: Decimal
    held: Decimal
    available: Decimal
    used_today: Decimal
    used_this_month: Decimal
    expiring_30_days: Decimal | None
    pool_balance: Decimal | None
    pool_available: Decimal | None
    teams: list[TeamBalance]
    # The usage figures are the whole organization's (False: of the member it is bound to).
    usage_whole: bool = True


def balance_summary(
    *, organization: Organization, teams: QuerySet[Team] | None = None, now: datetime | None = None
) -> BalanceSummary:
    """The organization's balance summary, per team for `teams` (default: all). From the cached
    account rows, one read of the usage rollups and their tail, and the lots expiring."""
    return _summary(organization, None, teams, now or timezone.now())


def _summary(
    organization: Organization, principal: Principal | None, teams, now: datetime
) -> BalanceSummary:
    """`balance_summary`, or `balance_for(principal)` when `principal` is bound to a team or a
    member (the usage it sees; what it can draw on; no organization-only figures)."""
    accounts = _accounts_of(organization.pk)
    bound = principal is not None and not principal.org_wide
    visible = principal.row_filter() if principal is not None else None
    totals, by_team = _used_by_team(organization, visible, now)
    if principal is not None and principal.member_id is not None:
        # A team's usage is shown as its total, not who spent it (a member sees that much).
        _, by_team = _used_by_team(organization, None, now)
    teams = list(teams if teams is not None else Team.objects.filter(organization=organization))
    pool = next((a for a in accounts if a.kind == Kind.POOL), None)
    team_accounts = {a.team_id: a for a in accounts if a.kind == Kind.TEAM}
    team_rows = []
    for team in teams:
        account = team_accounts.get(team.pk) if team.funding == Team.Funding.ALLOCATION else pool
        used = by_team.get(team.pk, _USED_ZERO)
        team_rows.append(
            TeamBalance(
                team=team,
                funding=team.funding,
                balance=account.balance if account else ZERO,
                held=account.held if account else ZERO,
                available=account.available if account else ZERO,
                used=used["total"],
                used_today=used["daily"],
                used_this_month=used["monthly"],
            )
        )
    used = {
        "total_used": totals["total"],
        "used_today": totals["daily"],
        "used_this_month": totals["monthly"],
    }
    if bound:
        drawn = _drawn(principal, accounts, {t.pk: t.funding for t in teams})
        pool = next((a for a in drawn if a.kind == Kind.POOL), None)
        balance, held = _sums(drawn)
        return BalanceSummary(
            total_credited=None, total_expired=None, expiring_30_days=None, **used,
            balance=balance, held=held, available=balance - held,
            pool_balance=pool.balance if pool else None,
            pool_available=pool.available if pool else None,
            teams=team_rows,
        )  # fmt: skip
    spendable = [a for a in accounts if a.kind in LedgerAccount.HOLDS_LOTS]
    credited = -sum((a.balance for a in accounts if a.kind in (Kind.GRANTS, Kind.PURCHASES)), ZERO)
    expired_acc = next((a for a in accounts if a.kind == Kind.EXPIRY), None)
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
    balance, held = _sums(spendable)
    return BalanceSummary(
        total_credited=credited,
        total_expired=account_balance(expired_acc) if expired_acc else ZERO,
        **used,
        balance=balance,
        held=held,
        available=balance - held,
        expiring_30_days=expiring,
        pool_balance=pool.balance if pool else ZERO,
        pool_available=pool.available if pool else ZERO,
        teams=team_rows,
        usage_whole=principal is None or principal.member_id is None,
    )


def _accounts_of(organization_id: int) -> list[LedgerAccount]:
    """The organization's accounts, without their teams (only `team_id` is read) or an order,
    from SQL compiled once (`portal.statements.compiled`): 0.35 ms instead of 0.5 with the ORM
    compiling it each time, and 0.9 with the join and an ORDER BY (medians in one process, one
    organization; docs/performance.md, runs 11 and 12)."""
    sql, params = compiled(
        ("balance_accounts",),
        lambda organization_id: (
            LedgerAccount.objects.filter(organization_id=organization_id)
            .order_by()
            .query.sql_with_params()
        ),
        {"organization_id": organization_id},
    )
    return model_rows(LedgerAccount, sql, params)


def _sums(accounts) -> tuple[Decimal, Decimal]:
    return sum((a.balance for a in accounts), ZERO), sum((a.held for a in accounts), ZERO)


@dataclass(frozen=True)
class CreditTotals:
    """OpenRouter's figures of `GET /api/v1/credits`, in credits: `total_credits` that came in
    and `total_usage` spent (what is left: their difference)."""

    total_credits: Decimal
    total_usage: Decimal

    @property
    def remaining(self) -> Decimal:
        return self.total_credits - self.total_usage


def credit_totals(summary: BalanceSummary) -> CreditTotals:
    """The one rule of the portal's totals in OpenRouter's terms (its `GET /api/v1/credits` and
    the upstream sync of `billing`): credits granted and purchased, and usage counted; for a
    principal bound to a team (no organization totals) or to a member (the member's usage),
    what it can draw on plus what it used, so that their difference is what is left."""
    total_credits = summary.total_credited
    if total_credits is None or not summary.usage_whole:
        total_credits = summary.available + summary.total_used
    return CreditTotals(total_credits=total_credits, total_usage=summary.total_used)


def draw_accounts(principal: Principal) -> list[LedgerAccount]:
    """The spendable accounts whose credits `principal` can draw on: the pool and every team
    account for a principal of the whole organization; else its teams' own accounts, and the
    pool when one of its teams is pool-funded (two queries)."""
    accounts = account_list(organization=principal.organization).filter(
        kind__in=LedgerAccount.HOLDS_LOTS
    )
    funding = {} if principal.org_wide else dict(principal.teams().values_list("pk", "funding"))
    return _drawn(principal, list(accounts), funding)


def _drawn(principal: Principal, accounts: list[LedgerAccount], funding: dict) -> list:
    """`draw_accounts` among `accounts`, given the funding of the teams it sees (by id)."""
    spendable = [a for a in accounts if a.kind in LedgerAccount.HOLDS_LOTS]
    if principal.org_wide:
        return spendable
    own = {pk for pk, f in funding.items() if f == Team.Funding.ALLOCATION}
    pool = Team.Funding.POOL in funding.values()
    return [
        a
        for a in spendable
        if (a.kind == Kind.TEAM and a.team_id in own) or (a.kind == Kind.POOL and pool)
    ]


@dataclass(frozen=True)
class Available:
    balance: Decimal
    held: Decimal
    available: Decimal


def available_for(principal: Principal) -> Available:
    """Balance, held and available (credits) of what `principal` can draw on, from the cached
    account balances only (cheap enough to poll: the page header asks every few seconds)."""
    balance, held = _sums(draw_accounts(principal))
    return Available(balance=balance, held=held, available=balance - held)


def balance_for(principal: Principal, now: datetime | None = None) -> BalanceSummary:
    """`balance_summary` as `principal` may see it: whole for a principal of the whole
    organization, with the usage figures of the member it is bound to, if any; else for the
    teams it sees, with balance, held and available of what it can draw on
    (`draw_accounts`: the pool only as what a pool-funded team can draw on), and the usage it
    sees (each team's usage in total, whoever spent it). From the cached account rows and one
    read of the usage rollups and their tail (two for a member; plus the lots expiring, for the
    whole organization)."""
    return _summary(principal.organization, principal, principal.team_list(), now or timezone.now())


REPORT_DIMENSIONS = {
    "operation": "operation",
    "team": "team__slug",
    "member": "member__email",
    "model": "model",
    "conversation": "conversation_id",
    "key": "api_key__name",
}
# The breakdowns a report has unless others are asked for: those the rollups hold. The
# conversation breakdown reads the raw events of the range (seconds over millions of events:
# docs/performance.md), so it is only made when asked for.
REPORT_DEFAULT_DIMENSIONS = ("operation", "team", "member", "model", "key")
# Breakdowns that name people or keys, with the id column that decides who may see a row.
_IDENTITY_DIMENSIONS = {"member": "member", "key": "api_key"}
OTHERS = {"member": "(other members)", "key": "(other keys)"}


def usage_report(
    *,
    principal: Principal,
    period: str,
    start: datetime,
    end: datetime,
    top: int = 50,
    dimensions: Iterable[str] = REPORT_DEFAULT_DIMENSIONS,
) -> dict:
    """Usage `principal` may see between `start` and `end` (UTC, by occurred_at; reversed
    usage excluded, as in the ledger): totals, a series per `period` bucket (daily, weekly from
    Monday, monthly) and breakdowns by each of `dimensions` (keys of `REPORT_DIMENSIONS`;
    default `REPORT_DEFAULT_DIMENSIONS`, all but conversation; the `top` largest by cost).
    Members and keys it may not identify are summed into one row (`OTHERS`). Periods are
    those of the current time zone. Reads the usage rollups and their tail
    (`credits.rollups.usage_sums`), one statement per figure; the conversation breakdown reads
    the raw events of the range (on a long history, seconds: docs/performance.md)."""
    tz = timezone.get_current_timezone()
    visible = principal.row_filter()
    bucket = _REPORT_PERIODS[period]

    def sums(**kwargs) -> list[dict]:
        return rollups.usage_sums(
            organization=principal.organization, visible=visible, start=start, end=end, **kwargs
        )

    series = [
        {"start": r[bucket], **{k: r[k] for k in rollups.SUMS}}
        for r in sorted(sums(time=bucket, tz=tz), key=lambda r: r[bucket])
    ]
    # The series' buckets partition the range: the totals are their sums.
    totals = {k: sum((r[k] for r in series), _RAW_ZERO[k]) for k in rollups.SUMS}
    breakdowns = {}
    for name in dimensions:
        field = REPORT_DIMENSIONS[name]
        id_field = _IDENTITY_DIMENSIONS.get(name)
        group = [field, id_field] if id_field else [field]
        if name == "conversation":  # not a rollup dimension: the raw events of the range
            qs = usage_visible(principal).filter(
                COUNTED, occurred_at__gte=start, occurred_at__lt=end
            )
            rows = list(qs.values(*group).annotate(**_RAW_SUMS))
            for row in rows:  # at the quantum, as usage_sums gives costs (SQLite sums floats)
                row["cost"] = quantize_credits(row["cost"])
        else:
            rows = sums(fields=group)
        rows.sort(key=lambda r: (-r["cost"], *(_nulls_last(r[g]) for g in group)))
        if id_field:
            rows = _identified(principal, name, rows, id_field, list(rollups.SUMS))
        breakdowns[name] = [
            {"key": r[field], **{k: r[k] for k in rollups.SUMS}} for r in rows[:top]
        ]
    return {
        "period": period,
        "start": start,
        "end": end,
        "totals": totals,
        "series": series,
        "breakdowns": breakdowns,
    }


_REPORT_PERIODS = {"daily": "day", "weekly": "week", "monthly": "month"}
_RAW_SUMS = {
    "events": Count("id"),
    "cost": Coalesce(Sum("cost"), ZERO),
    "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
    "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
    "cached_tokens": Coalesce(Sum("cached_tokens"), 0),
    "reasoning_tokens": Coalesce(Sum("reasoning_tokens"), 0),
}
_RAW_ZERO = {k: ZERO if k == "cost" else 0 for k in rollups.SUMS}


def _nulls_last(value) -> tuple:
    """A sort key that puts None after every value (as PostgreSQL orders ascending)."""
    return (value is None, "" if value is None else value)


def _identified(principal: Principal, name: str, rows: list[dict], id_field: str, sums) -> list:
    """Rows of a member or key breakdown, those `principal` may not identify summed into one."""
    field = REPORT_DIMENSIONS[name]
    if name == "member":
        visible = {r[id_field] for r in rows if principal.sees_member(r[id_field])}
    else:
        ids = {r[id_field] for r in rows if r[id_field] is not None}
        keys = ApiKey.objects.filter(pk__in=ids)
        visible = {k.pk for k in keys if principal.sees_key(k)} | {None}
    shown = [r for r in rows if r[id_field] in visible]
    hidden = [r for r in rows if r[id_field] not in visible]
    if hidden:
        other = {field: OTHERS[name], id_field: None}
        for k in sums:
            other[k] = sum((r[k] for r in hidden), type(hidden[0][k])(0))
        shown.append(other)
        shown.sort(key=lambda r: -r["cost"])
    return shown


def budgets_visible(principal: Principal) -> QuerySet:
    """The budgets `principal` may see (`accounts.access.Principal.budget_filter`)."""
    from .models import Budget

    return (
        Budget.objects.filter(organization=principal.organization)
        .filter(principal.budget_filter())
        .select_related("organization", "team", "member", "api_key")
    )


def budget_get(*, principal: Principal, id) -> object:
    """A budget `principal` may see, by its public id. Raises NotFound (404)."""
    budget = budgets_visible(principal).filter(public_id=id).first()
    if budget is None:
        raise NotFound("No such budget in this organization.", resource="budget")
    return budget


def guardrails_visible(principal: Principal) -> QuerySet:
    """The organization's guardrails (OpenRouter's `/guardrails`; `keys:read` at the gate):
    every principal that may read keys sees them all; their assignments are filtered by the keys
    and members it sees."""
    from .models import Guardrail

    return Guardrail.objects.filter(organization=principal.organization).select_related(
        "organization"
    )


def guardrail_get(*, principal: Principal, id) -> object:
    """A guardrail of `principal`'s organization, by its public id. Raises NotFound (404)."""
    guardrail = guardrails_visible(principal).filter(public_id=id).first()
    if guardrail is None:
        raise NotFound("No such guardrail in this organization.", resource="guardrail")
    return guardrail
