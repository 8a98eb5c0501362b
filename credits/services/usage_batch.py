"""Recording many usage events at once (`POST /api/v1/credits/usage` with `{"events": [...]}`,
`replay_trace`, the demo): the same outcome as `usage_record` called for each event in order
(the same costs, refusals, lots burned and balances), in a constant number of statements per
batch instead of about twenty per event.

How: the paying account is locked once, then the windows of the budgets that apply (checked
and counted in memory in order, written in one UPDATE); the events' ids are looked up in one
query; lots are read once and burned in memory in burn order; transactions, entries and usage
rows are inserted in bulk; the lots and the balance are updated once. If a concurrent request
claims one of the ids meanwhile (a unique index says so at insert), the batch falls back to
`usage_record` one event at a time, which settles each race as a single request does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from portal.errors import ApplicationError, IdempotencyConflict

from ..metrics import usage_outcomes_count
from ..models import CreditLot, LedgerAccount, LedgerEntry, LedgerTransaction, UsageEvent
from .budgets import BudgetGate
from .ledger_core import (
    Kind,
    _burn_order,
    _check_key,
    _ensure_available,
    _expire_due,
    _lock,
    spending_account,
    system_account_of,
)
from .usage import (
    Attribution,
    UsageInput,
    UsageResult,
    _occurred_at,
    _usage_event,
    usage_price,
    usage_record,
)

Outcome = UsageResult | ApplicationError


@dataclass
class _Priced:
    index: int
    event: UsageInput
    digest: str
    cost: Decimal
    price: object
    source: str
    occurred_at: object


@transaction.atomic
def usage_record_many(*, attribution: Attribution, events: Sequence[UsageInput]) -> list[Outcome]:
    """Record `events` in order as `usage_record` would, one outcome per event: a UsageResult
    (created, or the first result of a retry) or the ApplicationError that refused it
    (ValidationFailed, IdempotencyConflict, InsufficientCredits, BudgetExceeded). Refused events
    record nothing; the others are committed together."""
    try:
        with transaction.atomic():
            outcomes = _record_many(attribution, events)
    except IntegrityError:  # a concurrent request took one of the ids: settle them one by one
        return [_record_one(attribution, event) for event in events]  # usage_record counts
    usage_outcomes_count(outcomes)
    return outcomes


def _record_one(attribution: Attribution, event: UsageInput) -> Outcome:
    try:
        with transaction.atomic():
            return usage_record(attribution=attribution, event=event)
    except ApplicationError as exc:
        return exc


def _record_many(attribution: Attribution, events: Sequence[UsageInput]) -> list[Outcome]:
    organization = attribution.organization
    now = timezone.now()
    outcomes: list[Outcome | None] = [None] * len(events)
    priced: list[_Priced] = []
    for index, event in enumerate(events):
        try:
            occurred_at = _occurred_at(event, now)
            cost, price, source = usage_price(event, occurred_at)
        except ApplicationError as exc:
            outcomes[index] = exc
            continue
        priced.append(_Priced(index, event, event.digest(), cost, price, source, occurred_at))

    if not priced:
        return outcomes
    sink = system_account_of(organization.pk, Kind.USAGE)  # created before any lock
    account = _lock([spending_account(organization, attribution.team)])
    account = next(iter(account.values()))
    gate = BudgetGate.of(attribution, now)  # after the account: the lock order of every debit
    existing = {
        row.event_id: row
        for row in UsageEvent.objects.filter(
            organization=organization, event_id__in=[p.event.id for p in priced]
        )
    }
    _expire_due(account, now)
    lots = list(_burn_order(CreditLot.objects.filter(account=account, remaining__gt=0)))
    touched: dict[int, CreditLot] = {}
    new: dict[str, tuple[_Priced, UsageEvent]] = {}
    postings: list[tuple[LedgerTransaction, list[tuple[CreditLot, Decimal]], Decimal]] = []
    start_balance = account.balance
    crossings: dict[int, list] = {}

    for item in priced:
        event = item.event
        earlier = existing.get(event.id) or (new[event.id][1] if event.id in new else None)
        if earlier is not None:
            if earlier.request_hash != item.digest:
                outcomes[item.index] = IdempotencyConflict(
                    f"Usage event '{event.id}' was recorded with a different body.",
                    event_id=event.id,
                )
            else:
                outcomes[item.index] = UsageResult(earlier, False, account.available)
            continue
        pairs = gate.applicable(event.operation, event.model)
        try:
            _ensure_available(account, item.cost)
            gate.check(pairs, item.cost)
        except ApplicationError as exc:
            outcomes[item.index] = exc
            continue
        txn = None
        if item.cost > 0:
            txn = LedgerTransaction(
                organization=organization,
                kind=LedgerTransaction.Kind.USAGE,
                idempotency_key=_check_key(f"usage:{event.id}", derived=True),
                request_hash=item.digest,
                metadata={"event_id": event.id},
            )
            postings.append((txn, _burn_in_memory(lots, item.cost, touched), item.cost))
            account.balance -= item.cost
        crossed = gate.charge(pairs, item.cost)
        row = _usage_event(
            attribution, event, item.digest, price=item.price, cost=item.cost,
            source=item.source, txn=txn, occurred_at=item.occurred_at, now=now,
            budget_windows=[w.pk for _, w in pairs] if item.cost > 0 else [],
        )  # fmt: skip
        new[event.id] = (item, row)
        outcomes[item.index] = UsageResult(row, True, account.available)
        crossings[item.index] = crossed

    LedgerTransaction.objects.bulk_create([txn for txn, _, _ in postings])
    entries = []
    for txn, burned, cost in postings:
        entries += [LedgerEntry(transaction=txn, account=account, amount=-portion, lot=lot)
                    for lot, portion in burned]  # fmt: skip
        entries.append(LedgerEntry(transaction=txn, account=sink, amount=cost))
    LedgerEntry.objects.bulk_create(entries)
    for _, row in new.values():
        row.transaction_id = row.transaction.pk if row.transaction is not None else None
    UsageEvent.objects.bulk_create([row for _, row in new.values()])
    CreditLot.objects.bulk_update(list(touched.values()), ["remaining"])
    spent = start_balance - account.balance
    if spent:
        LedgerAccount.objects.filter(pk=account.pk).update(balance=F("balance") - spent)
    fired = {(a.budget_id, a.window_start, a.threshold): a for a in gate.flush()}
    for index, crossed in crossings.items():
        alerts = [fired[k] for c in crossed if (k := (c.budget.pk, c.window.window_start,
                                                      c.threshold)) in fired]  # fmt: skip
        if alerts:
            result = outcomes[index]
            outcomes[index] = UsageResult(result.event, True, result.balance_after, tuple(alerts))
    return outcomes


def _burn_in_memory(
    lots: list[CreditLot], amount: Decimal, touched: dict[int, CreditLot]
) -> list[tuple[CreditLot, Decimal]]:
    """`_burn` on lots already read in burn order (the account is locked): take `amount` from
    the first lots with something left. The caller checked that the balance covers it."""
    taken = []
    left = amount
    for lot in lots:
        if left == 0:
            break
        if lot.remaining == 0:
            continue
        portion = min(lot.remaining, left)
        lot.remaining -= portion
        touched[lot.pk] = lot
        taken.append((lot, portion))
        left -= portion
    if left:
        raise AssertionError(
            f"lots of account {lots[0].account_id if lots else '?'} do not cover its balance"
        )
    return taken
