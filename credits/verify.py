"""Reconciliation: recompute every cached figure from the rows it summarizes."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, DecimalField, F, Sum, Value
from django.db.models.functions import Coalesce

from portal.money import CREDIT_DECIMAL_PLACES, CREDIT_MAX_DIGITS

from .models import CreditLot, Hold, LedgerAccount, LedgerEntry, LedgerTransaction

LIMIT = 100  # mismatches reported per kind of check


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


def ledger_verify(organization_id: int | None = None) -> list[Mismatch]:
    """Check, for every (or one organization's) account: balance == sum(entries) (sinks keep no
    cached balance), held == sum(pending holds), and on spendable accounts sum(lot remaining) ==
    balance; for every lot: remaining == sum(its entries), 0 <= remaining <= original amount,
    and its entries are on its account; for every transaction: at least two entries summing to
    zero, all on accounts of its own organization. Returns the mismatches (empty: all hold)."""
    zero = Decimal(0)
    credits = DecimalField(max_digits=CREDIT_MAX_DIGITS, decimal_places=CREDIT_DECIMAL_PLACES)
    accounts = LedgerAccount.objects.select_related("organization", "team").order_by("pk")
    lots = CreditLot.objects.all()
    txns = LedgerTransaction.objects.all()
    if organization_id is not None:
        accounts = accounts.filter(organization_id=organization_id)
        lots = lots.filter(organization_id=organization_id)
        txns = txns.filter(organization_id=organization_id)
    account_ids = accounts.values("pk")
    sums = dict(
        LedgerEntry.objects.filter(account__in=account_ids)
        .values("account")
        .annotate(s=Sum("amount"))
        .values_list("account", "s")
    )
    held = dict(
        Hold.objects.filter(account__in=account_ids, status=Hold.Status.PENDING)
        .values("account")
        .annotate(s=Sum("amount"))
        .values_list("account", "s")
    )
    lot_sums = dict(
        CreditLot.objects.filter(account__in=account_ids)
        .values("account")
        .annotate(s=Sum("remaining"))
        .values_list("account", "s")
    )
    out: list[Mismatch] = []
    for account in accounts:
        label = _label(account)
        computed = sums.get(account.pk, zero)
        if account.kind not in LedgerAccount.SINKS and account.balance != computed:
            out.append(Mismatch("balance", account.pk, account.balance, computed, label))
        pending = held.get(account.pk, zero)
        if account.held != pending:
            out.append(Mismatch("held", account.pk, account.held, pending, label))
        in_lots = lot_sums.get(account.pk, zero)
        if account.kind in LedgerAccount.HOLDS_LOTS and account.balance != in_lots:
            out.append(Mismatch("lots", account.pk, account.balance, in_lots, label))
    lot_entries = lots.annotate(
        s=Coalesce(Sum("entries__amount"), Value(zero), output_field=credits)
    ).exclude(s=F("remaining"))
    for lot in lot_entries.order_by("pk")[:LIMIT]:
        out.append(Mismatch(f"lot {lot.pk} remaining", lot.account_id, lot.remaining, lot.s))
    for lot in lots.filter(remaining__gt=F("original_amount")).order_by("pk")[:LIMIT]:
        what = f"lot {lot.pk} remaining above its original amount"
        out.append(Mismatch(what, lot.account_id, lot.remaining, lot.original_amount))
    misplaced = LedgerEntry.objects.filter(lot__in=lots.values("pk")).exclude(
        account_id=F("lot__account_id")
    )
    for entry in misplaced.order_by("pk")[:LIMIT]:
        what = f"entry {entry.pk} of lot {entry.lot_id} on another account"
        out.append(Mismatch(what, entry.account_id, entry.amount, zero))
    unbalanced = (
        txns.annotate(s=Sum("entries__amount"), n=Count("entries"))
        .exclude(s=0, n__gte=2)
        .order_by("pk")
    )
    for txn in unbalanced[:LIMIT]:
        what = f"transaction {txn.pk} ({txn.n} entries) sum"
        out.append(Mismatch(what, None, zero, txn.s if txn.s is not None else zero))
    foreign = LedgerEntry.objects.filter(transaction__in=txns.values("pk")).exclude(
        account__organization_id=F("transaction__organization_id")
    )
    for entry in foreign.order_by("pk")[:LIMIT]:
        what = f"entry {entry.pk} of transaction {entry.transaction_id} on another organization"
        out.append(Mismatch(what, entry.account_id, entry.amount, zero))
    return out
