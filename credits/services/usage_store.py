"""The statements of the metering path (`credits.services.usage.usage_record_many`): what it
reads once the paying account is locked, and how it writes what it decided, in as few round trips
as the database allows. The rules (prices, budgets, burn order, idempotency) are decided by the
caller; this module only reads and writes rows.

On PostgreSQL, after the account's lock (and the budget windows', `budgets.BudgetGate`):
- one SELECT reads the account's lots in burn order, the events among the batch's ids recorded
  before (by their keys, `UsageEventKey`), and ids for the new transactions and usage rows from
  their sequences;
- one statement writes everything: the transactions, their entries, the usage rows and their
  keys (each table's rows one JSON parameter of an INSERT, `portal.statements.insert_rows`, in
  a data-modifying WITH clause), the lots' and the account's new figures and the budget
  windows' counters. A key taken meanwhile by a request paying from another account fails it
  on the keys' unique index (IntegrityError: the caller runs again).
Elsewhere (SQLite: the demo), the same rows in one statement per table, their ids given ahead too.

The lock, the read and the write run on `portal.statements.prepared_cursor`: after a connection
has run them 5 times, PostgreSQL runs them prepared (neither parsed nor planned again).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.db.models.base import ModelState
from django.db.models.expressions import RawSQL

from portal.errors import NotFound
from portal.money import credits_expression
from portal.statements import (
    attributes_settable,
    compiled,
    insert_rows,
    json_rows,
    json_rows_sql,
    model_rows,
    prepared_cursor,
)

from ..models import (
    Budget,
    CreditLot,
    Hold,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    UsageEvent,
    UsageEventKey,
)
from .budgets import BudgetGate, budgets_applying_query, check_rank
from .ledger_core import (
    LOT_COLUMNS,
    _burn_order,
    spending_account_lock,
    spending_account_query,
)

_BUDGET_COLUMNS = [f.attname for f in Budget._meta.concrete_fields]


def lock_spending(
    attribution, account_id: int | None = None
) -> tuple[LedgerAccount, list[Budget] | None]:
    """Lock the account `attribution` pays from (`spending_account_lock`), or the account
    `account_id` (a hold's). PostgreSQL: the same statement reads the budgets that apply to it
    (`budgets_applying`, in check order), which the account's lock does not guard (their
    windows' locks do), and it is compiled once per shape (`portal.statements`); elsewhere the
    budgets are None (read them)."""
    organization = attribution.organization
    if connection.vendor != "postgresql":
        return spending_account_lock(organization, attribution.team, account_id), None
    principals = {f"budget_{k}": v for k, v in BudgetGate.principals(attribution).items()}

    def lock(**ids):
        values = {k: v for k, v in {**ids, **principals}.items() if v is not None}
        sql, params = compiled(("lock_spending", *sorted(values)), _lock_statement, values)
        return next(iter(model_rows(LedgerAccount, sql, params)), None)

    account = spending_account_lock(organization, attribution.team, account_id, lock=lock)
    return account, sorted(json_rows(Budget, account.budgets_json), key=check_rank)


def _lock_statement(
    *, organization_id, team_id=None, account_id=None, budget_team_id=None,
    budget_member_id=None, budget_api_key_id=None,
) -> tuple[str, list]:  # fmt: skip
    budgets = budgets_applying_query(
        organization_id, team_id=budget_team_id, member_id=budget_member_id,
        api_key_id=budget_api_key_id,
    ).values(*_BUDGET_COLUMNS)  # fmt: skip
    query = spending_account_query(
        organization_id=organization_id, team_id=team_id, account_id=account_id,
        budgets_json=RawSQL(*json_rows_sql(budgets)),  # noqa: S611
    )  # fmt: skip
    return query.query.sql_with_params()


@dataclass
class Locked:
    """What a batch reads once its account is locked."""

    lots: list[CreditLot]  # the account's lots with something left, in burn order
    existing: dict[str, UsageEvent]  # event id -> the event recorded before
    keys_taken: set[str]  # ledger idempotency keys among the batch's already used
    transaction_ids: list[int] = field(default_factory=list)  # ids to give, in order
    usage_ids: list[int] = field(default_factory=list)
    hold: Hold | None = None  # the hold being captured, locked, its state as committed


# What changes of a hold after it is made (the rest is fixed when it is made).
_HOLD_STATE = ("status", "captured_amount", "transaction_id", "resolved_at")


def read_locked(
    account: LedgerAccount,
    organization_id: int,
    event_ids: list[str],
    keys: list[str],
    expired_first_at: datetime | None = None,
    hold: Hold | None = None,
) -> Locked:
    """The lots of the locked `account`, the usage events of `event_ids` recorded before (full
    rows: one more statement, only when there are some: a retry), and which ledger idempotency
    `keys` are taken. PostgreSQL: one statement, which also takes one transaction id and one
    usage id per event from their sequences. `expired_first_at`: the burn order of a capture
    (`ledger_core._burn_order`). `hold`: the hold a capture resolves, locked (FOR UPDATE) in the
    same statement and returned as a copy with its state as committed (`Locked.hold`). Raises
    NotFound for a hold that is not there."""
    if connection.vendor != "postgresql":
        lots, earlier, taken = _read_queries(
            account.pk, organization_id, event_ids, keys, expired_first_at
        )
        return Locked(
            lots=list(lots.only(*LOT_COLUMNS)),
            existing=_existing_rows(list(earlier)),
            keys_taken=set(taken),
            transaction_ids=_sqlite_ids(LedgerTransaction, len(event_ids)),
            usage_ids=_sqlite_ids(UsageEvent, len(event_ids)),
            hold=_hold_as_locked(hold, Hold.objects.select_for_update().filter(pk=hold.pk)
                                 .values_list(*_HOLD_STATE).first()) if hold else None,
        )  # fmt: skip
    values = {"account": account.pk, "organization": organization_id,
              "event_ids": list(event_ids), "keys": list(keys), "n": len(event_ids)}  # fmt: skip
    if expired_first_at is not None:
        values["expired_first_at"] = expired_first_at
    if hold is not None:
        values["hold_id"] = hold.pk
    # The lists are array parameters: one statement for every size, compiled once.
    shape = ("read_locked", expired_first_at is not None, hold is not None)
    sql, params = compiled(shape, _read_statement, values)
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        lots_json, earlier_ids, keys_taken, transaction_ids, usage_ids, *state = cursor.fetchone()
    return Locked(
        lots=json_rows(CreditLot, lots_json),
        existing=_existing_rows(earlier_ids),
        keys_taken=set(keys_taken),
        transaction_ids=list(transaction_ids),
        usage_ids=list(usage_ids),
        hold=_hold_as_locked(hold, json.loads(state[0], parse_float=Decimal) if state[0] else None)
        if hold
        else None,
    )


def _sqlite_ids(model, n: int) -> list[int]:
    """`n` ids for new rows of `model` on SQLite (the demo), after the highest its AUTOINCREMENT
    has given (`sqlite_sequence`), which an insert with them moves on: as a sequence's, and safe
    because the demo's transactions are IMMEDIATE (one writer at a time)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [model._meta.db_table])
        found = cursor.fetchone()
    last = found[0] if found else 0
    return list(range(last + 1, last + 1 + n))


def _hold_as_locked(hold: Hold, state) -> Hold:
    if state is None:
        raise NotFound("No such hold.")
    locked = copy.copy(hold)  # the caller's instance stays as it was
    locked._state = copy.copy(hold._state)
    locked._state.fields_cache = dict(hold._state.fields_cache)
    for name, value in zip(_HOLD_STATE, state, strict=True):
        setattr(locked, name, Hold._meta.get_field(name).to_python(value))
    return locked


def _read_queries(account_id, organization_id, event_ids, keys, expired_first_at, among="in"):
    """The lots in burn order, the ids of the events recorded before, the ledger keys taken
    (`among`: the lookup of the lists, "in", or "any" for one array parameter each)."""
    lots = _burn_order(
        CreditLot.objects.filter(account_id=account_id, remaining__gt=0), expired_first_at
    )
    earlier = UsageEventKey.objects.filter(
        organization_id=organization_id, **{f"event_id__{among}": event_ids}
    ).values_list("usage_id", flat=True)
    taken = (
        LedgerTransaction.objects.filter(
            organization_id=organization_id, **{f"idempotency_key__{among}": keys}
        )
        .order_by()  # no sort: a lookup by the unique (organization, idempotency_key) index
        .values_list("idempotency_key", flat=True)
    )
    return lots, earlier, taken


def _read_statement(
    *, account, organization, event_ids, keys, n, expired_first_at=None, hold_id=None
) -> tuple[str, list]:
    """`read_locked`'s one statement on PostgreSQL (built once per shape: `portal.statements`);
    `n` ids are taken from each sequence; with `hold_id`, the hold's state, locked."""
    lots, earlier, taken = _read_queries(
        account, organization, event_ids, keys, expired_first_at, among="any"
    )
    lots_sql, lots_params = json_rows_sql(lots.values(*LOT_COLUMNS))
    earlier_sql, earlier_params = earlier.query.sql_with_params()
    taken_sql, taken_params = taken.query.sql_with_params()
    # The sequence looked up once (a scalar subquery: an InitPlan), not once per id: 1,000 ids
    # took 2.3 ms with the lookup in each call, 0.3 ms with it once.
    ids = (
        "ARRAY(SELECT nextval((SELECT pg_get_serial_sequence(%s, 'id')::regclass))"
        "        FROM generate_series(1, %s))"
    )
    sql = f"""SELECT {lots_sql},
                     ARRAY({earlier_sql}),
                     ARRAY({taken_sql}),
                     {ids},
                     {ids}"""  # noqa: S608 (ORM SQL)
    params = [*lots_params, *earlier_params, *taken_params,
              LedgerTransaction._meta.db_table, n, UsageEvent._meta.db_table, n]  # fmt: skip
    if hold_id is not None:
        columns = ", ".join(connection.ops.quote_name(Hold._meta.get_field(f).column)
                            for f in _HOLD_STATE)  # fmt: skip
        sql += (
            f", (SELECT json_build_array({columns})::text FROM {Hold._meta.db_table}"  # noqa: S608
            " WHERE id = %s FOR UPDATE)"
        )
        params.append(hold_id)
    return sql, params


def _existing_rows(ids: list[int]) -> dict[str, UsageEvent]:
    if not ids:
        return {}
    return {row.event_id: row for row in UsageEvent.objects.filter(pk__in=ids)}


@dataclass
class Writes:
    """What a batch decided to write."""

    account: LedgerAccount
    spent: Decimal  # leaves the account's balance
    released: Decimal = Decimal(0)  # leaves the account's `held` (a captured hold's amount)
    hold: Hold | None = None  # captured: its new status, amount and transaction
    transactions: list[LedgerTransaction] = field(default_factory=list)
    entries: list[dict] = field(default_factory=list)  # `entry` values, written, not read
    usage: list[UsageEvent] = field(default_factory=list)
    lots: list[CreditLot] = field(default_factory=list)  # with their new `remaining`
    windows: tuple[str, list] | None = None  # the budget counters' UPDATE (BudgetGate)


def entry(*, transaction_id: int, account_id: int, amount: Decimal, lot_id: int | None,
          created_at: datetime) -> dict:  # fmt: skip
    """A ledger entry for `Writes.entries`: its columns by attname, but the id, which the
    sequence gives. A dict, not a LedgerEntry: the metering path writes two or more an event and
    reads none of them back (as instances, a batch's entries took 9 of its 1,000 events' ms)."""
    return {
        "transaction_id": transaction_id,
        "account_id": account_id,
        "amount": amount,
        "lot_id": lot_id,
        "created_at": created_at,
    }


def write(writes: Writes) -> None:
    """Write `writes`, each usage row with its key (`UsageEventKey`): one statement on
    PostgreSQL (rows carry the ids `read_locked` took), one per table elsewhere."""
    if connection.vendor != "postgresql":
        _write_each(writes)
        return
    parts: list[tuple[str, list]] = [
        insert_rows(LedgerTransaction, writes.transactions),
        insert_rows(LedgerEntry, writes.entries),
        insert_rows(UsageEvent, writes.usage),
        insert_rows(UsageEventKey, _keys(writes.usage)),
    ]
    if writes.lots:
        parts.append((
            f"UPDATE {CreditLot._meta.db_table} AS l SET remaining = d.remaining"  # noqa: S608
            "  FROM unnest(%s::bigint[], %s::numeric[]) AS d (id, remaining) WHERE l.id = d.id",
            [[lot.pk for lot in writes.lots], [lot.remaining for lot in writes.lots]],
        ))  # fmt: skip
    if writes.spent or writes.released:
        parts.append((
            f"UPDATE {LedgerAccount._meta.db_table}"  # noqa: S608
            "   SET balance = balance - %s, held = held - %s WHERE id = %s",
            [writes.spent, writes.released, writes.account.pk],
        ))  # fmt: skip
    if writes.hold is not None:
        hold = writes.hold
        parts.append((
            f"UPDATE {Hold._meta.db_table} SET status = %s, resolved_at = %s,"  # noqa: S608
            "       captured_amount = %s, transaction_id = %s WHERE id = %s",
            [hold.status, hold.resolved_at, hold.captured_amount,
             hold.transaction.pk if hold.transaction else None, hold.pk],
        ))  # fmt: skip
    if writes.windows is not None:
        parts.append(writes.windows)
    parts = [(statement, params) for statement, params in parts if statement]
    if not parts:
        return
    clauses = ", ".join(f"w{i} AS ({statement})" for i, (statement, _) in enumerate(parts))
    with prepared_cursor() as cursor:
        cursor.execute(f"WITH {clauses} SELECT 1", [p for _, params in parts for p in params])  # noqa: S608 (Django's SQL)
    alias = connection.alias  # once: each read of the proxy looks up the thread's connection
    for row in [*writes.transactions, *writes.usage]:
        row._state.adding = False
        row._state.db = alias


def _keys(usage: list[UsageEvent]) -> list[dict]:
    """The keys of `usage` (UsageEventKey's columns by attname), as `entry` makes entries."""
    return [
        {"usage_id": u.pk, "organization_id": u.organization_id, "event_id": u.event_id}
        for u in usage
    ]


_PLANS: dict = {}


def row(model_class, /, **values):
    """An unsaved `model_class` instance, as `model_class(**values)` makes it (values by
    attname, by `pk`, or related instances by relation name, which are cached on it; the other
    fields their defaults), without `Model.__init__`'s handling of each keyword: its attributes
    set at once when `portal.statements.attributes_settable` (else by `__init__`,
    positionally). What to do with each field is worked out once per model and set of keywords
    (`_plan`). A quarter of a batch's Python was `__init__`: the metering path builds two rows an
    event. tests/credits/test_metering_statements.py compares the two."""
    key = (model_class, *values)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _plan(model_class, tuple(values))
    constants, given, related, called, attnames = plan
    state = constants.copy()
    for attname, name in given:
        state[attname] = values[name]
    for attname, name, _ in related:
        obj = values[name]
        state[attname] = None if obj is None else obj.pk
    for attname, model_field in called:
        state[attname] = model_field.get_default()
    if attributes_settable(model_class):
        instance = model_class.__new__(model_class)
        instance._state = ModelState()
        instance.__dict__.update(state)
    else:
        instance = model_class(*[state[attname] for attname in attnames])
    for _, name, model_field in related:
        model_field.set_cached_value(instance, values[name])
    return instance


def _plan(model_class, names: tuple[str, ...]) -> tuple[dict, list, list, list, list[str]]:
    """`row`'s work for `model_class` given the keywords `names`: the fields left to a default
    that is always the same (None, "", a constant), as {attname: value}; the fields given, as
    (attname, keyword) (`pk` is the primary key's); the relations given as instances, as
    (attname, keyword, field); the fields whose default is a callable, a new value each time
    (`timezone.now`, `dict`), as (attname, field); and every attname, in the fields' order."""
    constants, given, related, called = {}, [], [], []
    for f in model_class._meta.concrete_fields:
        if f.attname in names:
            given.append((f.attname, f.attname))
        elif f.primary_key and "pk" in names:
            given.append((f.attname, "pk"))
        elif f.is_relation and f.name in names:
            related.append((f.attname, f.name, f))
        elif f.has_default() and callable(f.default):
            called.append((f.attname, f))
        else:
            constants[f.attname] = f.get_default()
    unknown = set(names) - {n for _, n in given} - {n for _, n, _ in related}
    if unknown:
        raise TypeError(f"{model_class.__name__} has no fields {sorted(unknown)}")
    return constants, given, related, called, [f.attname for f in model_class._meta.concrete_fields]


def _write_each(writes: Writes) -> None:
    from django.db.models import F

    LedgerTransaction.objects.bulk_create(writes.transactions)
    LedgerEntry.objects.bulk_create([LedgerEntry(**values) for values in writes.entries])
    for row in writes.usage:
        row.transaction_id = row.transaction.pk if row.transaction is not None else None
    UsageEvent.objects.bulk_create(writes.usage)
    UsageEventKey.objects.bulk_create([UsageEventKey(**values) for values in _keys(writes.usage)])
    CreditLot.objects.bulk_update(writes.lots, ["remaining"])
    if writes.spent or writes.released:
        LedgerAccount.objects.filter(pk=writes.account.pk).update(
            balance=credits_expression(F("balance") - writes.spent),
            held=credits_expression(F("held") - writes.released),
        )
    if writes.hold is not None:
        writes.hold.save(update_fields=["status", "resolved_at", "captured_amount", "transaction"])
