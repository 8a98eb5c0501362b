"""The forecast: how fast credits are spent and when they run out, as `principal` may see it.

- Run rates (credits per hour and per day) over the last 24 hours, 7 days and 30 days, each
  divided by the hours of usage history it covers (`credits.analytics.burn_rates`).
- Spend by hour of day over the last 30 days, in the organization's time zone.
- For every account the principal can draw on (the pool and each team's own account), its
  available credits, its own run rates (from its usage entries in the ledger) and the projected
  depletion date (`credits.analytics.project_depletion`: the 7-day rate unless the last 24 hours
  surge, the 30-day rate when the last week spent nothing).

Reads the usage of the last 30 days and its ledger entries (raw rows, by when the usage occurred;
an hourly rollup will serve this when history grows: see docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Min, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.access import Principal

from .analytics import (
    HourSpend,
    Projection,
    Rate,
    burn_rates,
    project_depletion,
    spend_by_hour_of_day,
)
from .models import LedgerAccount, LedgerEntry, LedgerTransaction
from .reports import organization_tz, spend_by_hour, spend_in_windows
from .selectors import available_for, draw_accounts

ZERO = Decimal(0)
WINDOW_HOURS = {"24h": 24, "7d": 24 * 7, "30d": 24 * 30}


@dataclass(frozen=True)
class AccountForecast:
    account: LedgerAccount
    available: Decimal
    rates: list[Rate]
    projection: Projection


@dataclass(frozen=True)
class Forecast:
    generated_at: datetime
    time_zone: str
    available: Decimal
    rates: list[Rate]
    projection: Projection
    hours: list[HourSpend]
    accounts: list[AccountForecast]


def _account_spend(accounts: list[LedgerAccount], now: datetime) -> dict[int, tuple[dict, int]]:
    """{account id: (credits its usage entries took in each trailing window, hours since its
    first usage in the last 30 days)}, by when the usage occurred (reversed usage left out)."""
    occurred = "transaction__usage__occurred_at"
    since = {name: now - timedelta(hours=hours) for name, hours in WINDOW_HOURS.items()}
    rows = (
        LedgerEntry.objects.filter(
            account__in=accounts,
            transaction__kind=LedgerTransaction.Kind.USAGE,
            transaction__reversed_by__isnull=True,
            **{f"{occurred}__gte": since["30d"], f"{occurred}__lte": now},
        )
        .values("account_id")
        .annotate(
            first=Min(occurred),
            **{
                name: Coalesce(Sum("amount", filter=Q(**{f"{occurred}__gte": start})), ZERO)
                for name, start in since.items()
            },
        )
        .order_by()
    )
    out = {}
    for row in rows:
        spent = {name: -row[name] for name in WINDOW_HOURS}
        observed = int((now - row["first"]).total_seconds() // 3600) + 1
        out[row["account_id"]] = (spent, observed)
    return out


def forecast_for(principal: Principal, now: datetime | None = None) -> Forecast:
    """The forecast of what `principal` may see (its usage, the accounts it can draw on)."""
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
    )
