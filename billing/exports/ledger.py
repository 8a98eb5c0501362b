"""Ledger rows: the entries of the accounts the principal sees (those of the ledger page), with
each account's opening balance and its balance right after each entry."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from django.conf import settings
from django.db.models import F, QuerySet, Sum, Window

from credits.models import LedgerEntry
from credits.selectors import accounts_visible

from .request import ExportRequest
from .values import ZERO, utc_iso


def _ledger_entries(request: ExportRequest) -> QuerySet[LedgerEntry]:
    f = request.filters
    entries = LedgerEntry.objects.filter(account__in=accounts_visible(request.principal))
    if f.account is not None:
        entries = entries.filter(account_id=f.account)
    return entries


def ledger_queryset(request: ExportRequest) -> QuerySet[LedgerEntry]:
    """The entries of the accounts the principal sees in the period (all kinds: a transaction
    kind filter is applied while writing, so that running balances stay the accounts' own),
    oldest first, each with `running` (the sum of its account's entries in the period up to
    it; add the account's opening balance)."""
    f = request.filters
    entries = _ledger_entries(request)
    if f.start is not None:
        entries = entries.filter(created_at__gte=f.start)
    if f.end is not None:
        entries = entries.filter(created_at__lt=f.end)
    running = Window(Sum("amount"), partition_by=[F("account_id")], order_by=F("id").asc())
    return entries.annotate(running=running).order_by("id")


def opening_balances(request: ExportRequest) -> dict[int, Decimal]:
    """{account id: balance before the period} (one grouped query; empty without `from`)."""
    if request.filters.start is None:
        return {}
    rows = (
        _ledger_entries(request)
        .filter(created_at__lt=request.filters.start)
        .values("account_id")
        .annotate(total=Sum("amount"))
    )
    return {r["account_id"]: r["total"] for r in rows}


_LEDGER_FIELDS = (
    "created_at",
    "id",
    "transaction_id",
    "transaction__kind",
    "account_id",
    "account__kind",
    "account__team__slug",
    "amount",
    "running",
    "lot_id",
    "transaction__memo",
)
LEDGER_COLUMNS = (
    "created_at",
    "entry",
    "transaction",
    "transaction_kind",
    "account",
    "account_kind",
    "team",
    "amount",
    "running_balance",
    "lot",
    "memo",
)


def ledger_rows(request: ExportRequest, chunk_size: int | None = None) -> Iterator[dict]:
    """The export's ledger entries (server-side cursor, chunks), each with the balance of its
    account right after it; the `transaction_kind` filter applied here."""
    chunk = chunk_size or settings.BILLING_EXPORT_CHUNK_ROWS
    opening = opening_balances(request)
    wanted = request.filters.transaction_kind
    rows = ledger_queryset(request).values_list(*_LEDGER_FIELDS)
    for values in rows.iterator(chunk_size=chunk):
        created, pk, tx, tx_kind, account, a_kind, team, amount, running, lot, memo = values
        if wanted and tx_kind != wanted:
            yield None  # counted for progress, not written
            continue
        yield {
            "created_at": utc_iso(created),
            "entry": pk,
            "transaction": tx,
            "transaction_kind": tx_kind,
            "account": account,
            "account_kind": a_kind,
            "team": team or "",
            "amount": amount,
            "running_balance": opening.get(account, ZERO) + running,
            "lot": lot,
            "memo": memo,
        }
