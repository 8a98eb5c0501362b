"""Monthly statements: an organization's spendable credits (its pool and team accounts) over one
calendar month in its time zone, read from the ledger.

For the month [start, end) (the first instants of the month and of the next one in the
organization's time zone, stored in UTC), with E the entries of the pool and team accounts:

- opening balance = sum(E before start); closing balance = sum(E before end);
- movements = sum(E in [start, end)) by the kind of their transaction: purchases (`purchase`),
  grants (`grant`), usage (`usage`, negative), expiry (`expiry`, negative), adjustments
  (reversals and anything else); allocations and reclaims move credits between the pool and a
  team and add up to zero over both;
- usage by team, model and operation: the same usage entries, grouped by the usage event their
  transaction recorded (so the breakdown adds up to the usage line);
- each account's opening and closing balance.

All figures come from one aggregate query over the entries, so they are one consistent
snapshot: opening + movements = closing exactly, and for a month with no later entries the
closing balance equals the accounts' cached balances. Credits are `Decimal` at the ledger's
quantum. Entries are dated by their `created_at` (server time; a client cannot backdate them).
"""

from __future__ import annotations

import calendar
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Organization
from credits.models import LedgerAccount, LedgerEntry, LedgerTransaction
from portal.errors import ValidationFailed

from ..models import Statement

SPENDABLE = (LedgerAccount.Kind.POOL, LedgerAccount.Kind.TEAM)
MOVEMENTS = {
    "purchases": (LedgerTransaction.Kind.PURCHASE,),
    "grants": (LedgerTransaction.Kind.GRANT,),
    "usage": (LedgerTransaction.Kind.USAGE,),
    "expiry": (LedgerTransaction.Kind.EXPIRY,),
}
NAMED_KINDS = {kind for kinds in MOVEMENTS.values() for kind in kinds}
TRANSFERS = (LedgerTransaction.Kind.ALLOCATION, LedgerTransaction.Kind.RECLAIM)


def month_bounds(time_zone: str, year: int, month: int) -> tuple[datetime, datetime]:
    """The first instant of `year`-`month` and of the next month in `time_zone`, in UTC."""
    zone = ZoneInfo(time_zone or "UTC")
    start = datetime(year, month, 1, tzinfo=zone)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))


def previous_month(organization: Organization, now: datetime | None = None) -> tuple[int, int]:
    """The calendar month before the current one in the organization's time zone."""
    local = (now or timezone.now()).astimezone(organization.zone)
    return (local.year - 1, 12) if local.month == 1 else (local.year, local.month - 1)


def _check_month(organization: Organization, year, month, now: datetime) -> tuple[int, int]:
    try:
        year, month = int(year), int(month)
    except (TypeError, ValueError):
        raise ValidationFailed({"month": ["year and month are integers."]}) from None
    if not 1 <= month <= 12:
        raise ValidationFailed({"month": ["Between 1 and 12."]})
    if not 2000 <= year <= 9999:
        raise ValidationFailed({"year": ["Between 2000 and 9999."]})
    start, end = month_bounds(organization.time_zone, year, month)
    if end > now:
        raise ValidationFailed(
            {"month": [f"{year}-{month:02d} has not ended in {organization.time_zone}."]}
        )
    if end <= organization.created_at:
        raise ValidationFailed(
            {"month": [f"{year}-{month:02d} ended before the organization was created."]}
        )
    return year, month


def statement_figures(organization: Organization, start: datetime, end: datetime) -> dict:
    """The statement's figures (credits, `Decimal`) for [start, end): opening and closing
    balances, the movements by kind, and the breakdown (see the module docstring)."""
    entries = LedgerEntry.objects.filter(
        account__organization=organization, account__kind__in=SPENDABLE, created_at__lt=end
    )
    during = Q(created_at__gte=start)
    kind = "transaction__kind"
    sums = {
        "opening_balance": Sum("amount", filter=Q(created_at__lt=start)),
        "closing_balance": Sum("amount"),
        **{
            name: Sum("amount", filter=during & Q(**{f"{kind}__in": kinds}))
            for name, kinds in MOVEMENTS.items()
        },
        "adjustments": Sum(
            "amount", filter=during & ~Q(**{f"{kind}__in": [*NAMED_KINDS, *TRANSFERS]})
        ),
        "transfers": Sum("amount", filter=during & Q(**{f"{kind}__in": TRANSFERS})),
    }
    figures = {name: value or Decimal(0) for name, value in entries.aggregate(**sums).items()}
    # Allocations and reclaims stay within the pool and the teams: they add up to zero.
    figures["adjustments"] += figures.pop("transfers")

    usage = entries.filter(during, transaction__kind=LedgerTransaction.Kind.USAGE)
    breakdown = {}
    for name, field in (
        ("by_team", "transaction__usage__team__name"),
        ("by_model", "transaction__usage__model"),
        ("by_operation", "transaction__usage__operation"),
    ):
        rows = usage.values(field).annotate(spent=-Sum("amount")).order_by("-spent", field)
        breakdown[name] = [
            {"key": row[field] or ("(organization pool)" if name == "by_team" else "(none)"),
             "spent": str(row["spent"])}
            for row in rows
        ]  # fmt: skip
    accounts = (
        entries.values("account_id", "account__kind", "account__team__name")
        .annotate(
            opening=Sum("amount", filter=Q(created_at__lt=start)),
            closing=Sum("amount"),
        )
        .order_by("account_id")
    )
    breakdown["accounts"] = [
        {
            "account": row["account__team__name"] or "Organization pool",
            "kind": row["account__kind"],
            "opening": str(row["opening"] or Decimal(0)),
            "closing": str(row["closing"] or Decimal(0)),
        }
        for row in accounts
    ]
    figures["breakdown"] = breakdown
    return figures


def statement_generate(
    *, organization: Organization, year, month, actor: Actor, now: datetime | None = None
) -> tuple[Statement, bool]:
    """The statement of `year`-`month` (a month that has ended in the organization's time zone),
    generated now from the ledger, or the one generated before (a past month's figures never
    change). Returns (statement, created); its PDF is rendered after commit by a Celery task.

    Raises ValidationFailed: not integers, a month outside 1..12, a month that has not ended,
    or one that ended before the organization existed."""
    now = now or timezone.now()
    year, month = _check_month(organization, year, month, now)
    existing = Statement.objects.filter(organization=organization, year=year, month=month).first()
    if existing is not None:
        return existing, False
    start, end = month_bounds(organization.time_zone, year, month)
    try:
        with transaction.atomic():
            figures = statement_figures(organization, start, end)
            statement = Statement.objects.create(
                organization=organization,
                year=year,
                month=month,
                time_zone=organization.time_zone or "UTC",
                period_start=start,
                period_end=end,
                generated_at=now,
                generated_by=actor.user,
                **figures,
            )
            audit_record(
                organization=organization,
                actor=actor,
                target=statement,
                action="statement.generated",
                after={
                    "statement": statement.public_id,
                    "month": f"{year}-{month:02d}",
                    "opening_balance": statement.opening_balance,
                    "closing_balance": statement.closing_balance,
                },
            )
            from ..tasks import document_pdf_render

            transaction.on_commit(
                lambda: document_pdf_render.delay("statement", statement.pk), robust=True
            )
    except IntegrityError:  # generated by a concurrent request
        return Statement.objects.get(organization=organization, year=year, month=month), False
    return statement, True


def statements_generate_due(*, now: datetime | None = None) -> int:
    """Generate the statement of the month that has just ended, in each organization's time
    zone, for every organization that existed then and has none yet (the hourly beat task: an
    organization's month ends at its local midnight). Returns how many were generated."""
    now = now or timezone.now()
    due: dict[tuple[int, int], list[Organization]] = {}
    for organization in Organization.objects.order_by("id"):
        year, month = previous_month(organization, now)
        _, end = month_bounds(organization.time_zone, year, month)
        if organization.created_at < end:
            due.setdefault((year, month), []).append(organization)
    generated = 0
    for (year, month), organizations in due.items():
        done = set(
            Statement.objects.filter(
                year=year, month=month, organization__in=organizations
            ).values_list("organization_id", flat=True)
        )
        for organization in organizations:
            if organization.pk in done:
                continue
            _, created = statement_generate(
                organization=organization,
                year=year,
                month=month,
                actor=Actor(system="statements"),
                now=now,
            )
            generated += created
    return generated


def statement_rows(statement: Statement) -> list[tuple[str, Decimal]]:
    """The statement's lines in order, for pages and the PDF: (label, credits)."""
    return [
        ("Opening balance", statement.opening_balance),
        ("Purchases", statement.purchases),
        ("Grants", statement.grants),
        ("Usage", statement.usage),
        ("Expiry", statement.expiry),
        ("Adjustments and reversals", statement.adjustments),
        ("Closing balance", statement.closing_balance),
    ]


def month_name(year: int, month: int) -> str:
    return f"{calendar.month_name[month]} {year}"


__all__ = [
    "month_bounds",
    "previous_month",
    "statement_figures",
    "statement_generate",
    "statements_generate_due",
    "statement_rows",
]
