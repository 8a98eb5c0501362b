"""Scheduled watches (Celery beat, `credits.tasks`): low balances, credits about to expire, and
each organization's daily usage summary. Each tells through `notifications.services.notify`,
which keeps every one of them to at most once a day per account, lot and organization (a
database uniqueness constraint on the event's key and day, not a check here).

- `balance.low`: a pool or team account whose available credits (balance - held) fell below its
  `low_balance` (credits, set per account; empty: never).
- `credits.expiring`: a lot of a pool or team account with credits left that expires within
  `CREDITS_EXPIRING_DAYS` (settings, default 7).
- `usage.daily_summary`: yesterday's usage of each organization that had any, yesterday being
  the organization's calendar day in its time zone.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from accounts.models import Organization
from notifications.services import notify

from ..models import CreditLot, LedgerAccount, UsageEvent
from ..selectors import COUNTED


def balances_low_check(*, now: datetime | None = None) -> int:
    """Tell `balance.low` for every account below its `low_balance`. Returns how many were told
    (not those told already today)."""
    told = 0
    accounts = LedgerAccount.objects.filter(
        kind__in=LedgerAccount.HOLDS_LOTS,
        low_balance__isnull=False,
        balance__lt=F("low_balance") + F("held"),
    ).select_related("organization", "team")
    for account in accounts:
        data = {
            "account": account.pk,
            "team": account.team.slug if account.team_id else None,
            "available": str(account.balance - account.held),
            "threshold": str(account.low_balance),
        }
        with transaction.atomic():
            event = notify(
                organization=account.organization,
                type="balance.low",
                data=data,
                key=f"account:{account.pk}",
            )
        told += event is not None
    return told


def credits_expiring_check(*, now: datetime | None = None) -> int:
    """Tell `credits.expiring` for every lot with credits left that expires within
    `CREDITS_EXPIRING_DAYS`. Returns how many were told."""
    now = now or timezone.now()
    days = getattr(settings, "CREDITS_EXPIRING_DAYS", 7)
    told = 0
    lots = CreditLot.objects.filter(
        account__kind__in=LedgerAccount.HOLDS_LOTS,
        remaining__gt=0,
        expires_at__gt=now,
        expires_at__lte=now + timedelta(days=days),
    ).select_related("organization", "account__team")
    for lot in lots:
        data = {
            "lot": lot.pk,
            "team": lot.account.team.slug if lot.account.team_id else None,
            "amount": str(lot.remaining),
            "expires_at": lot.expires_at.isoformat(),
        }
        with transaction.atomic():
            event = notify(
                organization=lot.organization, type="credits.expiring", data=data,
                key=f"lot:{lot.pk}",
            )  # fmt: skip
        told += event is not None
    return told


def daily_summaries_send(*, now: datetime | None = None) -> int:
    """Tell `usage.daily_summary` of yesterday (each organization's own calendar day) to every
    organization that had usage then. Returns how many organizations were told."""
    now = now or timezone.now()
    told = 0
    for organization in Organization.objects.all():
        tz = organization.zone
        day = now.astimezone(tz).date() - timedelta(days=1)
        start = datetime.combine(day, time.min, tzinfo=tz)
        end = start + timedelta(days=1)
        usage = UsageEvent.objects.filter(
            COUNTED, organization=organization, occurred_at__gte=start, occurred_at__lt=end
        ).aggregate(requests=Count("id"), cost=Sum("cost"))
        if not usage["requests"]:
            continue
        data = {"date": day.isoformat(), "requests": usage["requests"], "cost": str(usage["cost"])}
        with transaction.atomic():
            event = notify(
                organization=organization, type="usage.daily_summary", data=data,
                key=f"organization:{organization.pk}:{day.isoformat()}",
            )  # fmt: skip
        told += event is not None
    return told


@transaction.atomic
def account_low_balance_set(*, account: LedgerAccount, low_balance, actor) -> LedgerAccount:
    """Set (credits) or clear (None) the amount below which a pool or team account tells
    `balance.low`. Audited. Raises ValidationFailed (a negative amount, a system account)."""
    from accounts.audit import audit_record
    from portal.errors import ValidationFailed
    from portal.money import parse_credits

    if account.kind not in LedgerAccount.HOLDS_LOTS:
        raise ValidationFailed({"account": ["Only pool and team accounts have a low balance."]})
    amount = (
        None
        if low_balance is None
        else parse_credits(low_balance, field="low_balance", allow_zero=True)
    )
    account = LedgerAccount.objects.select_for_update().get(pk=account.pk)
    before = {"low_balance": str(account.low_balance) if account.low_balance is not None else None}
    account.low_balance = amount
    account.save(update_fields=["low_balance"])
    audit_record(
        organization=account.organization,
        actor=actor,
        action="account.low_balance_set",
        target=account,
        before=before,
        after={"low_balance": str(amount) if amount is not None else None},
    )
    return account
