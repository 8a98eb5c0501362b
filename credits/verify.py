"""Reconciliation: recompute every cached figure from the rows it summarizes."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Sum

from .models import CreditLot, Hold, LedgerAccount, LedgerEntry, LedgerTransaction


@dataclass(frozen=True)
class Mismatch:
    what: str
    account: int | None
    cached: Decimal
    computed: Decimal

    def __str__(self) -> str:
        where = f"account {self.account}" if self.account else "ledger"
        return f"{where}: {self.what} cached {self.cached}, computed {self.computed}"


def ledger_verify(organization_id: int | None = None) -> list[Mismatch]:
    """Check, for every (or one organization's) account: balance == sum(entries) (sinks keep no
    cached balance), held == sum(pending holds), and on spendable accounts sum(lot remaining) ==
    balance; and that every transaction's entries sum to zero. Returns the mismatches."""
    zero = Decimal(0)
    accounts = LedgerAccount.objects.order_by("pk")
    if organization_id is not None:
        accounts = accounts.filter(organization_id=organization_id)
    sums = dict(LedgerEntry.objects.filter(account__in=accounts).values_list("account")
                .annotate(s=Sum("amount")).values_list("account", "s"))
    held = dict(Hold.objects.filter(account__in=accounts, status=Hold.Status.PENDING)
                .values("account").annotate(s=Sum("amount")).values_list("account", "s"))
    lots = dict(CreditLot.objects.filter(account__in=accounts).values("account")
                .annotate(s=Sum("remaining")).values_list("account", "s"))
    out: list[Mismatch] = []
    for account in accounts:
        if account.kind not in LedgerAccount.SINKS and account.balance != sums.get(account.pk, zero):
            out.append(Mismatch("balance", account.pk, account.balance, sums.get(account.pk, zero)))
        if account.held != held.get(account.pk, zero):
            out.append(Mismatch("held", account.pk, account.held, held.get(account.pk, zero)))
        if account.kind in LedgerAccount.HOLDS_LOTS and account.balance != lots.get(account.pk, zero):
            out.append(Mismatch("lots", account.pk, account.balance, lots.get(account.pk, zero)))
    txns = LedgerTransaction.objects.all()
    if organization_id is not None:
        txns = txns.filter(organization_id=organization_id)
    unbalanced = txns.annotate(s=Sum("entries__amount")).exclude(s=0).exclude(s__isnull=True)
    for txn in unbalanced[:100]:
        out.append(Mismatch(f"transaction {txn.pk} entries sum", None, zero, txn.s))
    return out
