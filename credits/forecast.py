"""The forecast: how fast credits are spent and when they run out, as `principal` may see it.

- Run rates (credits per hour and per day) over the last 24 hours, 7 days and 30 days, each
  divided by the hours of usage history it covers (`credits.analytics.burn_rates`).
- Spend by hour of day over the last 30 days, in the organization's time zone.
- For every account the principal can draw on (the pool and each team's own account), its
  available credits, its own run rates (from its usage entries in the ledger) and the projected
  depletion date (`credits.analytics.project_depletion`: the 7-day rate unless the last 24 hours
  surge, the 30-day rate when the last week spent nothing).
- For every budget the principal may see, its current window and the projected spend at the
  window's end (`budget_projection`, from the window's counter: see the rule there).

Reads the usage rollups and their tail (`credits.rollups.usage_sums`) of the last 30 days, by when
the usage occurred, and per account by the account its cost was debited from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Q
from django.utils import timezone

from accounts.access import Principal
from portal.money import CREDIT_QUANTUM

from .analytics import (
    HourSpend,
    Projection,
    Rate,
    burn_rates,
    project_depletion,
    spend_by_hour_of_day,
)
from .models import Budget, BudgetWindow, LedgerAccount
from .reports import organization_tz, spend_by_hour, spend_in_windows
from .rollups import first_usages, usage_sums
from .selectors import available_for, budgets_visible, draw_accounts

ZERO = Decimal(0)
MICROSECOND = timedelta(microseconds=1)
MICROSECONDS_PER_HOUR = Decimal(3_600_000_000)
# The first tenth of a window is extrapolated as if a tenth had passed (`budget_projection`).
EARLY_FRACTION = Decimal("0.1")
WINDOW_HOURS = {"24h": 24, "7d": 24 * 7, "30d": 24 * 30}


@dataclass(frozen=True)
class AccountForecast:
    account: LedgerAccount
    available: Decimal
    rates: list[Rate]
    projection: Projection


@dataclass(frozen=True)
class BudgetProjection:
    """A budget's current window and where its spend is heading (credits; times UTC)."""

    budget: Budget
    window_start: datetime
    window_end: datetime | None  # None: a lifetime budget (no end, no projection)
    spent: Decimal
    held: Decimal
    limit: Decimal
    rate_per_hour: Decimal | None  # the window's own rate (see `budget_projection`)
    projected: Decimal | None  # spent + held + rate x hours left, at the window's end
    exceeds: bool  # projected > limit


@dataclass(frozen=True)
class Forecast:
    generated_at: datetime
    time_zone: str
    available: Decimal
    rates: list[Rate]
    projection: Projection
    hours: list[HourSpend]
    accounts: list[AccountForecast]
    budgets: list[BudgetProjection]


def _hours(span: timedelta) -> Decimal:
    return Decimal(span // MICROSECOND) / MICROSECONDS_PER_HOUR


def budget_projection(budget: Budget, window: BudgetWindow, now: datetime) -> BudgetProjection:
    """Where `budget`'s spend in `window` (the window containing `now`) will be at the window's
    end, from the window's counter alone (no usage history is read):

        rate      = spent / max(elapsed, a tenth of the window)        (credits per hour)
        projected = spent + held + rate x (window end - now)           (credits)

    The rate is the window's own: what was spent since the window started over the hours that
    passed, so a budget is projected on the same spend it is enforced on (its filters, its
    scope, its time zone) and the projection is exact at the window's end. Early in a window
    the elapsed time counts as at least a tenth of the window (2.4 hours of a day, 16.8 of a
    week, about 3 days of a month): one request in the first minutes does not project a
    hundredfold. Pending holds (`held`) count as spent, as enforcement counts them.
    `exceeds` is `projected > limit`. A lifetime budget has no end: no rate, no projection."""
    spent, held = window.spent or ZERO, window.held or ZERO
    end = window.window_end
    if end is None:
        return BudgetProjection(
            budget, window.window_start, None, spent, held, budget.limit, None, None, False
        )
    length = _hours(end - window.window_start)
    elapsed = _hours(max(now - window.window_start, timedelta(0)))
    left = _hours(max(end - now, timedelta(0)))
    rate = spent / max(elapsed, length * EARLY_FRACTION)
    projected = (spent + held + rate * left).quantize(CREDIT_QUANTUM)
    return BudgetProjection(
        budget=budget,
        window_start=window.window_start,
        window_end=end,
        spent=spent,
        held=held,
        limit=budget.limit,
        rate_per_hour=rate.quantize(CREDIT_QUANTUM),
        projected=projected,
        exceeds=projected > budget.limit,
    )


def budget_projections(budgets, now: datetime | None = None) -> list[BudgetProjection]:
    """`budget_projection` of each of `budgets` in its current window (one query of the
    window counters, `budget_current_windows`)."""
    from .services.budgets import budget_current_windows

    now = now or timezone.now()
    budgets = list(budgets)
    windows = budget_current_windows(budgets, now)
    return [budget_projection(b, windows[b.pk], now) for b in budgets]


def _account_spend(accounts: list[LedgerAccount], now: datetime) -> dict[int, tuple[dict, int]]:
    """{account id: (credits its usage took in each trailing window, hours since its first
    usage in the last 30 days)}, by when the usage occurred (reversed usage left out), from the
    usage rollups and their tail by paying account (`credits.rollups.usage_sums`)."""
    if not accounts:
        return {}
    organization = accounts[0].organization
    where = Q(account__in=[a.pk for a in accounts])
    end = now + MICROSECOND  # up to now, inclusive
    spent: dict[int, dict] = {}
    firsts: dict[int, datetime] = {}
    for name, hours in WINDOW_HOURS.items():
        since = now - timedelta(hours=hours)
        rows = usage_sums(
            organization=organization,
            where=where,
            start=since,
            end=end,
            fields=["account"],
            first=name == "30d",
        )
        for row in rows:
            spent.setdefault(row["account"], {})[name] = row["cost"]
            if name == "30d":
                firsts[row["account"]] = max(row["first"], since)
    out = {}
    for pk, first in first_usages(organization, field="account", after=firsts, end=end).items():
        observed = int((now - first).total_seconds() // 3600) + 1
        out[pk] = ({name: spent[pk].get(name, ZERO) for name in WINDOW_HOURS}, observed)
    return out


def forecast_for(principal: Principal, now: datetime | None = None) -> Forecast:
    """The forecast of what `principal` may see (its usage, the accounts it can draw on, the
    budgets it sees: at most 1,000, by id)."""
    now = now or timezone.now()
    tz = organization_tz(principal.organization)
    today = timezone.localtime(now, tz).date()
    windows, observed = spend_in_windows(principal=principal, now=now)
    rates = burn_rates(windows, observed)
    available = available_for(principal).available
    hours = spend_by_hour_of_day(
        spend_by_hour(principal=principal, start=now - timedelta(days=30), end=now, tz=tz)
    )
    accounts = draw_accounts(principal)
    spend = _account_spend(accounts, now)
    per_account = []
    for account in sorted(accounts, key=lambda a: (a.kind != LedgerAccount.Kind.POOL, a.pk)):
        spent, seen = spend.get(account.pk, ({}, None))
        account_rates = burn_rates(spent, seen)
        per_account.append(
            AccountForecast(
                account=account,
                available=account.available,
                rates=account_rates,
                projection=project_depletion(account.available, account_rates, today),
            )
        )
    return Forecast(
        generated_at=now,
        time_zone=str(tz),
        available=available,
        rates=rates,
        projection=project_depletion(available, rates, today),
        hours=hours,
        accounts=per_account,
        budgets=budget_projections(budgets_visible(principal).order_by("id")[:1000], now),
    )
