"""Reconciliation: recompute every cached figure from the rows it summarizes."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.db.models import Count, DecimalField, F, Func, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from portal.money import CREDIT_DECIMAL_PLACES, CREDIT_MAX_DIGITS

from .models import CreditLot, Hold, LedgerAccount, LedgerEntry, LedgerTransaction

LIMIT = 100  # lots and transactions reported at most
SQLITE_TOLERANCE = Decimal("1e-9")
CREDITS = DecimalField(max_digits=CREDIT_MAX_DIGITS, decimal_places=CREDIT_DECIMAL_PLACES)


@dataclass(frozen=True)
class Mismatch:
    """One figure that does not match the rows it summarizes. `account` (an id) and `label`
    (`<org slug> <kind>[ <team slug>]`) name the account, when the figure is an account's."""

    what: str
    account: int | None
    cached: Decimal
    computed: Decimal
    label: str = ""

    def __str__(self) -> str:
        where = "ledger"
        if self.account is not None:
            where = f"account {self.account}" + (f" ({self.label})" if self.label else "")
        return f"{where}: {self.what} cached {self.cached}, computed {self.computed}"


def _label(account: LedgerAccount) -> str:
    team = f" {account.team.slug}" if account.team_id else ""
    return f"{account.organization.slug} {account.kind}{team}"


def _sum(queryset, field: str):
    """A correlated subquery: SUM(`field`) over `queryset` (filtered by an OuterRef), or 0."""
    total = queryset.order_by().annotate(s=Func(F(field), function="SUM")).values("s")
    return Coalesce(Subquery(total), Value(Decimal(0)), output_field=CREDITS)


def _same(cached: Decimal, computed: Decimal) -> bool:
    """Exact on PostgreSQL (numeric). SQLite, the demo's database, sums decimals in binary
    floating point, so there a sum may be off by rounding: equal within 1e-9 credits."""
    if connection.vendor == "sqlite":
        return abs(cached - computed) < SQLITE_TOLERANCE
    return cached == computed


def ledger_verify(organization_id: int | None = None) -> list[Mismatch]:
    """Check, for every (or one organization's) account: balance == sum(entries) (sinks keep no
    cached balance), held == sum(pending holds), and on spendable accounts sum(lot remaining) ==
    balance; for every lot: remaining == sum(its entries), remaining <= original amount, and its
    entries are on its account; for every transaction: at least two entries summing to zero, all
    on accounts of its own organization. Returns the mismatches (empty: all hold). Three queries,
    each reporting at most LIMIT rows."""
    zero = Decimal(0)
    accounts = LedgerAccount.objects.select_related("organization", "team")
    lots = CreditLot.objects.all()
    txns = LedgerTransaction.objects.all()
    if organization_id is not None:
        accounts = accounts.filter(organization_id=organization_id)
        lots = lots.filter(organization_id=organization_id)
        txns = txns.filter(organization_id=organization_id)
    out: list[Mismatch] = []
    accounts = accounts.annotate(
        in_entries=_sum(LedgerEntry.objects.filter(account=OuterRef("pk")), "amount"),
        in_holds=_sum(
            Hold.objects.filter(account=OuterRef("pk"), status=Hold.Status.PENDING), "amount"
        ),
        in_lots=_sum(CreditLot.objects.filter(account=OuterRef("pk")), "remaining"),
    )
    for account in accounts.order_by("pk"):
        label = _label(account)
        if account.kind not in LedgerAccount.SINKS and not _same(
            account.balance, account.in_entries
        ):
            out.append(Mismatch("balance", account.pk, account.balance, account.in_entries, label))
        if not _same(account.held, account.in_holds):
            out.append(Mismatch("held", account.pk, account.held, account.in_holds, label))
        if account.kind in LedgerAccount.HOLDS_LOTS and not _same(account.balance, account.in_lots):
            out.append(Mismatch("lots", account.pk, account.balance, account.in_lots, label))
    lots = lots.annotate(
        in_entries=Coalesce(Sum("entries__amount"), Value(zero), output_field=CREDITS),
        misplaced=Count("entries", filter=~Q(entries__account_id=F("account_id"))),
    ).filter(
        ~Q(in_entries=F("remaining")) | Q(remaining__gt=F("original_amount")) | Q(misplaced__gt=0)
    )
    for lot in lots.order_by("pk")[:LIMIT]:
        if not _same(lot.remaining, lot.in_entries):
            out.append(
                Mismatch(f"lot {lot.pk} remaining", lot.account_id, lot.remaining, lot.in_entries)
            )
        if lot.remaining > lot.original_amount:
            out.append(
                Mismatch(
                    f"lot {lot.pk} remaining above its original amount",
                    lot.account_id,
                    lot.remaining,
                    lot.original_amount,
                )
            )
        if lot.misplaced:
            out.append(
                Mismatch(
                    f"lot {lot.pk}: entries on another account",
                    lot.account_id,
                    Decimal(lot.misplaced),
                    zero,
                )
            )
    txns = txns.annotate(
        total=Sum("entries__amount"),
        n=Count("entries"),
        foreign=Count("entries", filter=~Q(entries__account__organization_id=F("organization_id"))),
    ).filter(~Q(total=0) | Q(total__isnull=True) | Q(n__lt=2) | Q(foreign__gt=0))
    for txn in txns.order_by("pk")[:LIMIT]:
        total = txn.total if txn.total is not None else zero
        if not _same(total, zero) or txn.n < 2:
            out.append(Mismatch(f"transaction {txn.pk} ({txn.n} entries) sum", None, zero, total))
        if txn.foreign:
            what = f"transaction {txn.pk}: entries on another organization's accounts"
            out.append(Mismatch(what, None, zero, Decimal(txn.foreign)))
    return out
