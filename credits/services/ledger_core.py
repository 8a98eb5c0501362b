"""The ledger's posting primitives, shared by `credits.services.ledger` (the public services):
accounts, row locks in ascending id order, idempotency keys, burning and expiring credit lots,
and balanced entries that move the cached balances. Callers hold the locks and the transaction.

Sign convention: an entry's `amount` is what it adds to its account's balance (see the models).
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Subquery, Value, When

from accounts.models import Organization, Team
from portal.errors import IdempotencyConflict, InsufficientCredits, NotFound, ValidationFailed
from portal.money import credits_expression, decimal_text, format_credits
from portal.statements import compiled, insert_rows, json_rows, json_rows_sql, prepared_cursor

from ..hooks import pool_locked
from ..models import CreditLot, Hold, LedgerAccount, LedgerEntry, LedgerTransaction

Kind = LedgerAccount.Kind
MAX_KEY_LENGTH = 255  # the idempotency_key columns


# `json.dumps(request, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)`, with the
# encoder made once instead of per call (half of a digest's time; the same text: stored digests
# must stay those of the same requests, or retries after a deploy become conflicts).
_CANONICAL = DjangoJSONEncoder(sort_keys=True, separators=(",", ":"))


def request_hash(**request) -> str:
    """sha256 of a canonical JSON form of a request (keys sorted, no spaces, Django's JSON of
    decimals and times), to tell a retry from a different request."""
    return hashlib.sha256(_CANONICAL.encode(request).encode()).hexdigest()


def new_idempotency_key() -> str:
    return f"auto:{uuid.uuid4()}"


def _check_key(key, *, derived: bool = False) -> str:
    """A non-blank idempotency key that fits the column (ValidationFailed). A `derived` key
    (`usage:<event id>`, `capture:<hold key>`) too long for it becomes its sha256 (the same for
    every retry)."""
    if not isinstance(key, str) or not key.strip() or (len(key) > MAX_KEY_LENGTH and not derived):
        raise ValidationFailed(
            {"idempotency_key": [f"A non-blank string of at most {MAX_KEY_LENGTH} characters."]}
        )
    if len(key) > MAX_KEY_LENGTH:
        return f"sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def _check_organization(organization: Organization | None, organization_id, what: str) -> None:
    """NotFound (never a leak) when a caller scoped to `organization` names another's object."""
    if organization is not None and organization.pk != organization_id:
        raise NotFound(f"No such {what}.")


def _check_spendable(account: LedgerAccount) -> None:
    if account.kind not in LedgerAccount.HOLDS_LOTS:
        raise ValidationFailed({"account": ["Only a pool or team account can be spent or held."]})


# Accounts ---------------------------------------------------------------------------------------


def system_account(organization: Organization, kind: str) -> LedgerAccount:
    """The organization's pool or system account of `kind`, created on first use.
    Raises ValidationFailed for an unknown kind (or `team`: see `team_account`)."""
    return system_account_of(organization.pk, kind)


def system_account_of(organization_id: int, kind: str) -> LedgerAccount:
    """`system_account` by organization id."""
    if kind not in Kind.values or kind == Kind.TEAM:
        raise ValidationFailed({"kind": [f"Unknown system account kind '{kind}'."]})
    account = LedgerAccount.objects.filter(organization_id=organization_id, kind=kind).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return LedgerAccount.objects.create(
                organization_id=organization_id,
                kind=kind,
                may_overdraw=kind in LedgerAccount.SOURCES | LedgerAccount.SINKS,
            )
    except IntegrityError:
        return LedgerAccount.objects.get(organization_id=organization_id, kind=kind)


def team_account(team: Team) -> LedgerAccount:
    """The team's own allocation account, created on first use."""
    account = LedgerAccount.objects.filter(team=team).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return LedgerAccount.objects.create(
                organization_id=team.organization_id, kind=Kind.TEAM, team=team
            )
    except IntegrityError:
        return LedgerAccount.objects.get(team=team)


def spending_account(organization: Organization, team: Team | None) -> LedgerAccount:
    """Where a request of `team` is paid from: the team's allocation, or the pool for a team that
    draws on it (`Team.funding == pool`) and for requests without a team. Raises NotFound for a
    team of another organization."""
    if _own_account_team(organization, team) is None:
        return system_account(organization, Kind.POOL)
    return team_account(team)


def _own_account_team(organization: Organization, team: Team | None) -> Team | None:
    """`team` when it pays from an allocation of its own, None when it draws on the pool (or
    there is no team). Raises NotFound for a team of another organization."""
    if team is not None and team.organization_id != organization.pk:
        raise NotFound("No such team.")
    if team is None or team.funding == Team.Funding.POOL:
        return None
    return team


def _lock(accounts: Iterable[LedgerAccount]) -> dict[int, LedgerAccount]:
    """Lock the non-sink accounts among `accounts`, in ascending id order; fresh rows by id.
    Raises NotFound for an account that is not in the database."""
    accounts = [a for a in accounts if a.kind not in LedgerAccount.SINKS]
    if any(a.pk is None for a in accounts):
        raise NotFound("No such account.")
    ids = sorted({a.pk for a in accounts})
    rows = LedgerAccount.objects.select_for_update().filter(pk__in=ids).order_by("pk")
    locked = {a.pk: a for a in rows}
    if len(locked) != len(ids):
        raise NotFound("No such account.")
    for row in locked.values():
        if row.kind == Kind.POOL:
            pool_locked(row)  # after commit: the pool's available, for billing's top-up
    return locked


def spending_account_query(
    *,
    organization_id: int,
    team_id: int | None = None,
    account_id: int | None = None,
    **annotations,
):
    """The statement that locks a spending account (unevaluated): SELECT ... FOR UPDATE of the
    account `account_id` of the organization, else of the team's own account (`team_id`), else of
    the pool; at most one row, which also reads the id of the organization's usage sink
    (`sink_id`, None before its first use) and the caller's `annotations` (read with the
    statement's snapshot, before the lock is had: only for what the lock does not guard)."""
    if account_id is not None:
        rows = LedgerAccount.objects.filter(organization_id=organization_id, pk=account_id)
    elif team_id is None:
        rows = LedgerAccount.objects.filter(organization_id=organization_id, kind=Kind.POOL)
    else:
        rows = LedgerAccount.objects.filter(team_id=team_id)
    sink = LedgerAccount.objects.filter(organization_id=organization_id, kind=Kind.USAGE)
    return (
        rows.select_for_update(of=("self",))
        .annotate(sink_id=Subquery(sink.values("pk")[:1]), **annotations)
        .order_by("pk")[:1]
    )


def spending_account_lock(
    organization: Organization, team: Team | None, account_id: int | None = None, *, lock=None
) -> LedgerAccount:
    """`spending_account` locked (`_lock`), in one statement once it exists
    (`spending_account_query`), or the account `account_id` of the organization (a hold's).
    `lock(organization_id=, team_id=, account_id=)` runs that statement and returns its row or
    None (default: as the ORM runs it; `usage_store.lock_spending` runs it compiled once, with
    the budgets read in it). Raises NotFound for a team of another organization, or an account
    not there."""
    own = _own_account_team(organization, team)
    ids = {
        "organization_id": organization.pk,
        "team_id": own.pk if own is not None and account_id is None else None,
        "account_id": account_id,
    }
    lock = lock or (lambda **ids: next(iter(spending_account_query(**ids)), None))
    account = lock(**ids)
    if account is None and account_id is not None:
        raise NotFound("No such account.")
    if account is None:  # first use: create it, then lock it as any account
        spending_account(organization, team)
        account = lock(**ids)
    if account.kind == Kind.POOL:
        pool_locked(account)
    return account


def _first_result(model, organization_id: int | None, key: str, digest: str):
    """The earlier result of an idempotency key, or None; IdempotencyConflict on another request."""
    existing = model.objects.filter(organization_id=organization_id, idempotency_key=key).first()
    if existing is not None and existing.request_hash != digest:
        raise IdempotencyConflict(
            f"The idempotency key '{key}' was used for a different request.",
            idempotency_key=key,
        )
    return existing


def _create_once(row_model, organization_id: int, key: str, digest: str, /, **fields):
    """Insert the row that claims `key`. Returns (row, created). A concurrent first use of the
    key has committed by the time the unique index lets us go on (READ COMMITTED: the lookup
    that follows sees it); IdempotencyConflict if it was another request. On PostgreSQL one
    statement, `INSERT ... ON CONFLICT (organization_id, idempotency_key) DO NOTHING RETURNING
    id`; elsewhere the INSERT in a savepoint. (`row_model` is positional: a Hold has a `model`
    field.)"""
    row = row_model(
        organization_id=organization_id, idempotency_key=key, request_hash=digest, **fields
    )
    if connection.vendor == "postgresql":
        statement, params = insert_rows(row_model, [row])
        with prepared_cursor() as cursor:
            cursor.execute(
                f"{statement} ON CONFLICT (organization_id, idempotency_key) DO NOTHING"
                f" RETURNING {connection.ops.quote_name(row_model._meta.pk.column)}",
                params,
            )
            inserted = cursor.fetchone()
        if inserted is not None:
            row.pk = inserted[0]
            row._state.adding, row._state.db = False, connection.alias
            return row, True
    else:
        try:
            with transaction.atomic():
                row.save(force_insert=True)
                return row, True
        except IntegrityError:
            pass
    return _claimed(row_model, organization_id, key, digest), False


def _claimed(row_model, organization_id: int, key: str, digest: str):
    """The row that claimed `key` before an insert of ours found it taken (IdempotencyConflict
    for another request)."""
    existing = _first_result(row_model, organization_id, key, digest)
    if existing is None:  # the conflicting row went (rolled back) before we could read it
        raise IntegrityError(f"{row_model.__name__} {key!r}: the key's row is gone")
    return existing


# Lots -------------------------------------------------------------------------------------------

# What burning and expiring need of a lot, in the model's field order (`Model.from_db`).
LOT_COLUMNS = tuple(
    f.attname
    for f in CreditLot._meta.concrete_fields
    if f.attname in {"id", "organization_id", "account_id", "remaining", "expires_at", "priority"}
)


def _burn_order(qs, expired_first_at: datetime | None = None):
    """Priority (lower first), then earliest expiry (none last), then age. With
    `expired_first_at`, lots expired by then come first: a capture spends the credits its hold
    kept from expiring before live ones."""
    order = ["priority", F("expires_at").asc(nulls_last=True), "created_at", "id"]
    if expired_first_at is not None:
        order.insert(0, Case(When(expires_at__lte=expired_first_at, then=Value(0)), default=1))
    return qs.order_by(*order)


def _burn(
    account: LedgerAccount, amount: Decimal, *, expired_first_at: datetime | None = None
) -> list[tuple[CreditLot, Decimal]]:
    """Take `amount` from the account's lots in burn order; the account is locked by the caller,
    which guards its lots. Returns the (lot, portion) pairs taken. (After `_expire_due`, lots
    past expiry are left only while pending holds need them, and then nothing is available: only
    a capture ever meets them.) Two statements: the lots, then one UPDATE of those taken."""
    lots = _burn_order(CreditLot.objects.filter(account=account, remaining__gt=0), expired_first_at)
    touched: dict[int, CreditLot] = {}
    taken = burn_lots(list(lots), amount, touched)
    CreditLot.objects.bulk_update(list(touched.values()), ["remaining"])
    return taken


def burn_lots(
    lots: list[CreditLot], amount: Decimal, touched: dict[int, CreditLot]
) -> list[tuple[CreditLot, Decimal]]:
    """The one lot-burning rule, in memory: take `amount` from `lots` (read in burn order, the
    account locked) first to last, lowering their `remaining`; the lots changed go in `touched`
    (by id) for the caller to write. Returns the (lot, portion) pairs taken. The caller checked
    that the balance covers `amount`; lots that do not are a broken ledger (AssertionError)."""
    taken = []
    left = amount
    for lot in lots:
        if left <= 0:
            break
        if lot.remaining <= 0:
            continue
        portion = min(lot.remaining, left)
        lot.remaining -= portion
        touched[lot.pk] = lot
        taken.append((lot, portion))
        left -= portion
    if left > 0:
        raise AssertionError(
            f"lots of account {lots[0].account_id if lots else '?'} do not cover its balance"
        )
    return taken


def _lots_due_query(account_id: int, now: datetime):
    """The account's lots with something left past expiry at `now`."""
    return CreditLot.objects.filter(account_id=account_id, remaining__gt=0, expires_at__lte=now)


def _lots_due_sql(account_id: int, now: datetime) -> tuple[str, list]:
    """PostgreSQL: `_lots_due_query` (LOT_COLUMNS) as a scalar subquery giving their JSON
    (`json_rows`), compiled once (`portal.statements`)."""
    return compiled(
        ("lots_due",),
        lambda **ids: json_rows_sql(_lots_due_query(**ids).values(*LOT_COLUMNS)),
        {"account_id": account_id, "now": now},
    )


def _lots_due(account_id: int, now: datetime) -> list[CreditLot]:
    """`_lots_due_query`'s lots (LOT_COLUMNS)."""
    if connection.vendor != "postgresql":
        return list(_lots_due_query(account_id, now).only(*LOT_COLUMNS))
    sql, params = _lots_due_sql(account_id, now)
    with prepared_cursor() as cursor:
        cursor.execute(f"SELECT {sql}", params)  # noqa: S608 (ORM SQL)
        return json_rows(CreditLot, cursor.fetchone()[0])


def hold_insert_unless_due(
    account: LedgerAccount, hold: Hold, now: datetime
) -> tuple[Hold | None, bool, list[CreditLot]]:
    """Insert `hold` (unsaved, on the locked `account`) and add its amount to the account's
    `held`, unless the account has lots past expiry at `now`: on PostgreSQL one statement, which
    reads those lots after the lock (a statement of its own snapshot), inserts only when there
    are none, `ON CONFLICT` of its idempotency key does nothing, and moves `held` only when it
    inserted. Returns (hold, created, []): the new hold, or the first one of its key
    (IdempotencyConflict for another request); or (None, False, due lots) when some are due:
    the caller expires them and inserts then (`hold_create`). Elsewhere the lots are read
    first, then `hold_create`."""
    if connection.vendor != "postgresql":
        due = _lots_due(account.pk, now)
        return (None, False, due) if due else (*hold_create(account, hold), [])
    due_sql, due_params = _lots_due_sql(account.pk, now)
    insert_sql, insert_params = insert_rows(Hold, [hold])
    account_table = connection.ops.quote_name(LedgerAccount._meta.db_table)
    with prepared_cursor() as cursor:
        cursor.execute(
            f"""WITH due (lots) AS (SELECT {due_sql}),
                     h AS ({insert_sql} WHERE (SELECT lots FROM due) = '[]'
                           ON CONFLICT (organization_id, idempotency_key) DO NOTHING RETURNING id),
                     held AS (UPDATE {account_table} SET held = held + %s
                               WHERE id = %s AND EXISTS (SELECT 1 FROM h))
                SELECT (SELECT lots FROM due), (SELECT id FROM h)""",  # noqa: S608 (ORM SQL)
            [*due_params, *insert_params, hold.amount, account.pk],
        )
        lots, inserted = cursor.fetchone()
    due = json_rows(CreditLot, lots)
    if due:
        return None, False, due
    if inserted is None:
        first = _claimed(Hold, hold.organization_id, hold.idempotency_key, hold.request_hash)
        return first, False, []
    hold.pk = inserted
    hold._state.adding, hold._state.db = False, connection.alias
    return hold, True, []


def hold_create(account: LedgerAccount, hold: Hold) -> tuple[Hold, bool]:
    """Insert `hold` (unsaved, on the locked `account`) as the row that claims its key
    (`_create_once`) and, when it is new, add its amount to the account's `held`."""
    skip = {"id", "organization_id", "idempotency_key", "request_hash"}
    fields = {f.attname: getattr(hold, f.attname) for f in Hold._meta.concrete_fields
              if f.attname not in skip}  # fmt: skip
    row, created = _create_once(Hold, hold.organization_id, hold.idempotency_key,
                                hold.request_hash, **fields)  # fmt: skip
    if created:
        LedgerAccount.objects.filter(pk=account.pk).update(
            held=credits_expression(F("held") + hold.amount)
        )
    return row, created


def _expire_due(
    account: LedgerAccount, now: datetime, lots: list[CreditLot] | None = None
) -> LedgerTransaction | None:
    """Post one expiry transaction for the account's lots past `expires_at` (the account is
    locked). Only what no pending hold needs expires now (the balance never drops below `held`);
    the rest goes once the holds are resolved. Returns the transaction, or None. `lots`: the
    account's lots with something left, read already (then nothing is read, and nothing is
    written unless one is due)."""
    if lots is None:
        due = _lots_due(account.pk, now)
    else:
        due = [lot for lot in lots if lot.expires_at is not None and lot.expires_at <= now]
    free = account.balance - account.held
    legs: list[tuple[LedgerAccount, Decimal, CreditLot | None]] = []
    for lot in sorted(due, key=lambda lot: (lot.expires_at, lot.pk)):
        if lot.remaining <= 0:
            continue
        portion = min(lot.remaining, free)
        if portion <= 0:
            break
        lot.remaining -= portion
        free -= portion
        if lot.remaining == 0:
            lot.expired_at = now
        lot.save(update_fields=["remaining", "expired_at"])
        legs.append((account, -portion, lot))
    if not legs:
        return None
    total = -sum(amount for _, amount, _ in legs)
    lots = [lot.pk for _, _, lot in legs]
    # A fresh key each time: a lot refilled by a reversal can expire again with the same amount.
    txn = LedgerTransaction.objects.create(
        organization_id=account.organization_id,
        kind=LedgerTransaction.Kind.EXPIRY,
        idempotency_key=f"expiry:{account.pk}:{uuid.uuid4()}",
        request_hash=request_hash(op="expiry", account=account.pk, lots=lots, total=total),
        memo=f"Expiry of lot(s) {', '.join(f'#{pk}' for pk in lots)}"[:500],
        metadata={"lots": lots, "as_of": now.isoformat()},
    )
    sink = system_account_of(account.organization_id, Kind.EXPIRY)
    _post_entries(txn, [*legs, (sink, total, None)])
    return txn


def _post_entries(
    txn: LedgerTransaction, legs: list[tuple[LedgerAccount, Decimal, CreditLot | None]]
) -> None:
    """Write the entries of `txn` and move the cached balances of non-sink accounts (locked by
    the caller). The entries must sum to zero (the database checks it again at commit)."""
    if len(legs) < 2 or sum(amount for _, amount, _ in legs) != 0:
        raise AssertionError(f"unbalanced transaction: {legs}")
    LedgerEntry.objects.bulk_create(
        [LedgerEntry(transaction=txn, account=a, amount=amt, lot=lot) for a, amt, lot in legs]
    )
    deltas: dict[int, Decimal] = defaultdict(Decimal)
    accounts = {}
    for account, amount, _ in legs:
        if account.kind not in LedgerAccount.SINKS:
            deltas[account.pk] += amount
            accounts[account.pk] = account
    for pk, delta in deltas.items():
        if delta:
            accounts[pk].balance += delta
            LedgerAccount.objects.filter(pk=pk).update(
                balance=credits_expression(F("balance") + delta)
            )


def _ensure_available(account: LedgerAccount, amount: Decimal, **context) -> None:
    if account.available < amount:
        raise InsufficientCredits(
            f"Insufficient credits: {format_credits(amount)} needed, "
            f"{format_credits(account.available)} available",
            needed=decimal_text(amount),
            available=decimal_text(account.available),
            account=account.kind,
            **context,
        )


def _spend(
    account: LedgerAccount,
    amount: Decimal,
    txn: LedgerTransaction,
    *,
    expired_first_at: datetime | None = None,
    sink: LedgerAccount | None = None,
) -> None:
    """Burn `amount` of the (locked) account's lots into the usage `sink`, as `txn`."""
    sink = sink or system_account_of(account.organization_id, Kind.USAGE)
    burned = _burn(account, amount, expired_first_at=expired_first_at)
    legs = [(account, -portion, lot) for lot, portion in burned]
    _post_entries(txn, [*legs, (sink, amount, None)])
