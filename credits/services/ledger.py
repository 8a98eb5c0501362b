"""The ledger's write path: grants, allocations and reclaims, debits, holds, expiry, reversals.

Every function here is atomic, takes an idempotency key unique per organization (a retry with the
same request returns the first result and posts nothing; the same key with another request raises
`IdempotencyConflict`), locks the accounts it changes with `select_for_update` in ascending id
order (so opposite transfers cannot deadlock), and checks and reserves in one step under those
locks (so parallel requests cannot spend past the balance). Sinks (usage, expiry) are never locked.

Rules: DESIGN.md "The ledger"; burn order as Lago, OpenMeter and Stripe credit grants (priority,
then earliest expiry, then age); holds as TigerBeetle's pending transfers.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.audit import Actor, audit_record
from accounts.models import Organization, Team
from portal.errors import (
    ApplicationError,
    Conflict,
    IdempotencyConflict,
    InsufficientCredits,
    ValidationFailed,
)
from portal.money import format_credits, parse_credits

from ..models import CreditLot, Hold, LedgerAccount, LedgerEntry, LedgerTransaction

Kind = LedgerAccount.Kind
LOT_FETCH = 50
MAX_HOLD_TIMEOUT = timedelta(hours=24)
DEFAULT_HOLD_TIMEOUT = timedelta(minutes=10)


class HoldNotPending(ApplicationError):
    """409: the hold was captured, voided or has expired."""

    status_code = 409
    type = "hold_not_pending"


def request_hash(**request) -> str:
    """sha256 of a canonical JSON form of a request, to tell a retry from a different request."""
    payload = json.dumps(request, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(payload.encode()).hexdigest()


def new_idempotency_key() -> str:
    return f"auto:{uuid.uuid4()}"


# Accounts ---------------------------------------------------------------------------------------


def system_account(organization: Organization, kind: str) -> LedgerAccount:
    """The organization's pool or system account of `kind`, created on first use."""
    account = LedgerAccount.objects.filter(organization=organization, kind=kind).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return LedgerAccount.objects.create(
                organization=organization, kind=kind,
                may_overdraw=kind in LedgerAccount.SOURCES | LedgerAccount.SINKS,
            )
    except IntegrityError:
        return LedgerAccount.objects.get(organization=organization, kind=kind)


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
    draws on it (`Team.funding == pool`) and for requests without a team."""
    if team is None or team.funding == Team.Funding.POOL:
        return system_account(organization, Kind.POOL)
    return team_account(team)


def _lock(accounts: Iterable[LedgerAccount]) -> dict[int, LedgerAccount]:
    """Lock the non-sink accounts among `accounts`, in ascending id order; fresh rows by id."""
    ids = sorted({a.pk for a in accounts if a.kind not in LedgerAccount.SINKS})
    rows = LedgerAccount.objects.select_for_update().filter(pk__in=ids).order_by("pk")
    return {a.pk: a for a in rows}


def _first_result(model, organization: Organization, key: str, digest: str):
    """The earlier result of an idempotency key, or None; IdempotencyConflict on another request."""
    existing = model.objects.filter(organization=organization, idempotency_key=key).first()
    if existing is not None and existing.request_hash != digest:
        raise IdempotencyConflict(
            f"The idempotency key '{key}' was used for a different request.",
            idempotency_key=key,
        )
    return existing


def _create_once(model, organization: Organization, key: str, digest: str, **fields):
    """Insert the row that claims `key` (in a savepoint). Returns (row, created). A concurrent
    first use of the key has committed by the time the unique index lets us go on."""
    try:
        with transaction.atomic():
            return model.objects.create(
                organization=organization, idempotency_key=key, request_hash=digest, **fields
            ), True
    except IntegrityError:
        existing = _first_result(model, organization, key, digest)
        if existing is None:
            raise
        return existing, False


# Lots -------------------------------------------------------------------------------------------


def _burn_order(qs):
    return qs.order_by("priority", F("expires_at").asc(nulls_last=True), "created_at", "id")


def _burn(account: LedgerAccount, amount: Decimal) -> list[tuple[CreditLot, Decimal]]:
    """Take `amount` from the account's lots in burn order; the account is locked by the caller,
    which guards its lots. Returns the (lot, portion) pairs taken."""
    taken: list[tuple[CreditLot, Decimal]] = []
    left = amount
    while left > 0:
        lots = list(
            _burn_order(CreditLot.objects.filter(account=account, remaining__gt=0))
            .exclude(pk__in=[lot.pk for lot, _ in taken])[:LOT_FETCH]
        )
        if not lots:
            raise AssertionError(f"lots of account {account.pk} do not cover its balance")
        for lot in lots:
            portion = min(lot.remaining, left)
            lot.remaining -= portion
            lot.save(update_fields=["remaining"])
            taken.append((lot, portion))
            left -= portion
            if left == 0:
                break
    return taken


def _expire_due(account: LedgerAccount, now: datetime) -> None:
    """Post expiry for the account's lots past `expires_at` (the account is locked). Only what
    no pending hold needs expires now; the rest goes when the holds are resolved."""
    due = list(
        CreditLot.objects.filter(account=account, remaining__gt=0, expires_at__lte=now).order_by(
            "expires_at", "id"
        )
    )
    for lot in due:
        portion = min(lot.remaining, account.balance - account.held)
        if portion <= 0:
            return
        txn, created = _create_once(
            LedgerTransaction, account.organization, f"expiry:lot:{lot.pk}:{lot.remaining}",
            request_hash(lot=lot.pk, remaining=lot.remaining), kind=LedgerTransaction.Kind.EXPIRY,
            memo=f"Expiry of lot #{lot.pk}",
        )
        lot.remaining -= portion
        if lot.remaining == 0:
            lot.expired_at = now
        lot.save(update_fields=["remaining", "expired_at"])
        sink = system_account(account.organization, Kind.EXPIRY)
        _post_entries(txn, [(account, -portion, lot), (sink, portion, None)])


def _post_entries(
    txn: LedgerTransaction, legs: list[tuple[LedgerAccount, Decimal, CreditLot | None]]
) -> None:
    """Write the entries of `txn` and move the cached balances of non-sink accounts (locked by
    the caller). The entries must sum to zero (the database checks it again at commit)."""
    assert sum(amount for _, amount, _ in legs) == 0, "unbalanced transaction"
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
            LedgerAccount.objects.filter(pk=pk).update(balance=F("balance") + delta)


def _ensure_available(account: LedgerAccount, amount: Decimal, **context) -> None:
    if account.available < amount:
        raise InsufficientCredits(
            f"Insufficient credits: {format_credits(amount)} needed, "
            f"{format_credits(account.available)} available",
            needed=str(amount),
            available=str(account.available),
            account=account.kind,
            **context,
        )


# Grants, allocations, reclaims ------------------------------------------------------------------


@transaction.atomic
def credits_grant(
    *, organization: Organization, amount, source: str = CreditLot.Source.GRANT,
    priority: int = 50, expires_at: datetime | None = None, memo: str = "",
    idempotency_key: str | None = None, actor: Actor,
) -> LedgerTransaction:
    """Credit the organization's pool with a new lot of `amount` credits (a grant, purchase or
    promotion), burning by `priority` (0-100, lower first) and optional `expires_at`.

    Raises ValidationFailed (bad amount, priority, past expiry), IdempotencyConflict."""
    amount = parse_credits(amount)
    if source not in CreditLot.Source.values:
        raise ValidationFailed({"source": [f"One of: {', '.join(CreditLot.Source.values)}."]})
    if not isinstance(priority, int) or not 0 <= priority <= 100:
        raise ValidationFailed({"priority": ["An integer from 0 to 100."]})
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= timezone.now()):
        raise ValidationFailed({"expires_at": ["An aware time in the future."]})
    key = idempotency_key or new_idempotency_key()
    digest = request_hash(op="grant", amount=amount, source=source, priority=priority,
                          expires_at=expires_at)
    pool = system_account(organization, Kind.POOL)
    origin = system_account(
        organization, Kind.PURCHASES if source == CreditLot.Source.PURCHASE else Kind.GRANTS
    )
    locked = _lock([pool, origin])
    txn, created = _create_once(
        LedgerTransaction, organization, key, digest,
        kind=LedgerTransaction.Kind.PURCHASE if source == "purchase" else LedgerTransaction.Kind.GRANT,
        memo=memo[:500], created_by=actor.user,
    )
    if not created:
        return txn
    lot = CreditLot.objects.create(
        organization=organization, account=pool, source=source, original_amount=amount,
        remaining=amount, priority=priority, expires_at=expires_at, memo=memo[:500],
    )
    _post_entries(txn, [(locked[origin.pk], -amount, None), (locked[pool.pk], amount, lot)])
    audit_record(organization=organization, actor=actor, target=txn,
                 action={"grant": "credits.granted", "purchase": "credits.purchased",
                         "promotion": "credits.promoted"}[source],
                 after={"amount": amount, "lot": lot.pk, "priority": priority,
                        "expires_at": expires_at, "idempotency_key": key})
    return txn


def _move(
    *, organization: Organization, source: LedgerAccount, target: LedgerAccount, amount,
    kind: str, idempotency_key: str | None, memo: str, actor: Actor, team: Team,
) -> LedgerTransaction:
    amount = parse_credits(amount)
    key = idempotency_key or new_idempotency_key()
    digest = request_hash(op=kind, amount=amount, source=source.pk, target=target.pk)
    existing = _first_result(LedgerTransaction, organization, key, digest)
    if existing is not None:
        return existing
    locked = _lock([source, target])
    source, target = locked[source.pk], locked[target.pk]
    txn, created = _create_once(LedgerTransaction, organization, key, digest, kind=kind,
                                memo=memo[:500], created_by=actor.user)
    if not created:
        return txn
    _expire_due(source, timezone.now())
    _ensure_available(source, amount)
    legs = []
    for lot, portion in _burn(source, amount):
        portion_lot = CreditLot.objects.create(
            organization=organization, account=target, source=lot.source,
            origin=lot.origin or lot, original_amount=portion, remaining=portion,
            priority=lot.priority, expires_at=lot.expires_at, memo=lot.memo,
        )
        legs += [(source, -portion, lot), (target, portion, portion_lot)]
    _post_entries(txn, legs)
    audit_record(organization=organization, actor=actor,
                 action="credits.allocated" if kind == "allocation" else "credits.reclaimed",
                 target=team,
                 after={"amount": amount, "transaction": txn.pk, "idempotency_key": key})
    return txn


@transaction.atomic
def credits_allocate(*, team: Team, amount, idempotency_key: str | None = None, memo: str = "",
                     actor: Actor) -> LedgerTransaction:
    """Move `amount` credits from the pool to the team's account, as lot portions that keep their
    priority and expiry. Raises InsufficientCredits, ValidationFailed, IdempotencyConflict."""
    if team.funding == Team.Funding.POOL:
        raise ValidationFailed({"team": ["This team draws on the pool; it has no allocation."]})
    organization = team.organization
    return _move(organization=organization, source=system_account(organization, Kind.POOL),
                 target=team_account(team), amount=amount,
                 kind=LedgerTransaction.Kind.ALLOCATION, idempotency_key=idempotency_key,
                 memo=memo, actor=actor, team=team)


@transaction.atomic
def credits_reclaim(*, team: Team, amount, idempotency_key: str | None = None, memo: str = "",
                    actor: Actor) -> LedgerTransaction:
    """Move `amount` credits back from the team's account to the pool (lot portions keep their
    priority and expiry). Raises InsufficientCredits, ValidationFailed, IdempotencyConflict."""
    organization = team.organization
    return _move(organization=organization, source=team_account(team),
                 target=system_account(organization, Kind.POOL), amount=amount,
                 kind=LedgerTransaction.Kind.RECLAIM, idempotency_key=idempotency_key,
                 memo=memo, actor=actor, team=team)


# Debits and holds -------------------------------------------------------------------------------


def ledger_debit(
    *, account: LedgerAccount, amount: Decimal, idempotency_key: str, digest: str,
    metadata: dict | None = None, memo: str = "",
) -> tuple[LedgerTransaction, bool]:
    """Spend `amount` (> 0) from `account` into the usage sink, burning its lots. Call inside the
    caller's atomic block. Returns (transaction, created). Raises InsufficientCredits."""
    organization = account.organization
    locked = _lock([account])[account.pk]
    txn, created = _create_once(
        LedgerTransaction, organization, idempotency_key, digest,
        kind=LedgerTransaction.Kind.USAGE, memo=memo[:500], metadata=metadata or {},
    )
    if not created:
        return txn, False
    _expire_due(locked, timezone.now())
    _ensure_available(locked, amount)
    _spend(locked, amount, txn)
    account.balance, account.held = locked.balance, locked.held
    return txn, True


def _spend(account: LedgerAccount, amount: Decimal, txn: LedgerTransaction) -> None:
    sink = system_account(account.organization, Kind.USAGE)
    legs = [(account, -portion, lot) for lot, portion in _burn(account, amount)]
    _post_entries(txn, [*legs, (sink, amount, None)])


@transaction.atomic
def hold_authorize(
    *, account: LedgerAccount, amount, idempotency_key: str, timeout: timedelta | None = None,
    extra_digest: str = "", **context,
) -> tuple[Hold, bool]:
    """Reserve `amount` credits on `account` until `now + timeout` (default 10 min, at most 24 h).
    Returns (hold, created). Raises InsufficientCredits, ValidationFailed, IdempotencyConflict."""
    amount = parse_credits(amount)
    timeout = timeout or DEFAULT_HOLD_TIMEOUT
    if not timedelta(seconds=1) <= timeout <= MAX_HOLD_TIMEOUT:
        raise ValidationFailed({"timeout": ["From 1 second to 24 hours."]})
    organization = account.organization
    digest = request_hash(op="hold", amount=amount, account=account.pk, extra=extra_digest)
    existing = _first_result(Hold, organization, idempotency_key, digest)
    if existing is not None:
        return existing, False
    locked = _lock([account])[account.pk]
    _expire_due(locked, timezone.now())
    _ensure_available(locked, amount)
    hold, created = _create_once(
        Hold, organization, idempotency_key, digest, account=locked, amount=amount,
        expires_at=timezone.now() + timeout, **context,
    )
    if created:
        LedgerAccount.objects.filter(pk=locked.pk).update(held=F("held") + amount)
    return hold, created


def _lock_hold(hold: Hold) -> tuple[Hold, LedgerAccount]:
    account = _lock([hold.account])[hold.account_id]
    return Hold.objects.select_for_update().get(pk=hold.pk), account


def _release(hold: Hold, account: LedgerAccount, status: str) -> None:
    LedgerAccount.objects.filter(pk=account.pk).update(held=F("held") - hold.amount)
    account.held -= hold.amount
    hold.status = status
    hold.resolved_at = timezone.now()


@transaction.atomic
def hold_capture(*, hold: Hold, amount, metadata: dict | None = None) -> LedgerTransaction | None:
    """Post the actual cost `amount` (>= 0) of a pending hold and release the rest. Above the hold,
    the difference is taken when available. Capturing a captured hold again with the same amount
    returns the first result.

    Raises HoldNotPending (voided, expired, or captured with another amount),
    InsufficientCredits (the excess is not available)."""
    amount = parse_credits(amount, allow_zero=True)
    hold, account = _lock_hold(hold)
    if hold.status == Hold.Status.CAPTURED and hold.captured_amount == amount:
        return hold.transaction
    if hold.status != Hold.Status.PENDING or hold.expires_at <= timezone.now():
        raise HoldNotPending(
            f"This hold is {hold.status if hold.status != 'pending' else 'expired'}.",
            hold_status=hold.status if hold.status != "pending" else "expired",
        )
    _release(hold, account, Hold.Status.CAPTURED)
    txn = None
    if amount > 0:
        _ensure_available(account, amount, hold=hold.pk)
        txn = LedgerTransaction.objects.create(
            organization=hold.organization, kind=LedgerTransaction.Kind.USAGE,
            idempotency_key=f"capture:{hold.idempotency_key}",
            request_hash=request_hash(hold=hold.pk, amount=amount), metadata=metadata or {},
        )
        _spend(account, amount, txn)
    hold.captured_amount = amount
    hold.transaction = txn
    hold.save(update_fields=["status", "resolved_at", "captured_amount", "transaction"])
    return txn


@transaction.atomic
def hold_void(*, hold: Hold) -> Hold:
    """Release a pending hold entirely. Voiding a voided hold returns it; others raise
    HoldNotPending."""
    hold, account = _lock_hold(hold)
    if hold.status == Hold.Status.VOIDED:
        return hold
    if hold.status != Hold.Status.PENDING:
        raise HoldNotPending(f"This hold is {hold.status}.", hold_status=hold.status)
    _release(hold, account, Hold.Status.VOIDED)
    hold.save(update_fields=["status", "resolved_at"])
    return hold


def holds_expire(*, now: datetime | None = None) -> int:
    """Release every pending hold past its `expires_at` (the beat task). Returns how many."""
    now = now or timezone.now()
    count = 0
    for hold in Hold.objects.filter(status=Hold.Status.PENDING, expires_at__lte=now).order_by("id"):
        with transaction.atomic():
            hold, account = _lock_hold(hold)
            if hold.status == Hold.Status.PENDING:
                _release(hold, account, Hold.Status.EXPIRED)
                hold.save(update_fields=["status", "resolved_at"])
                count += 1
    return count


def lots_expire(*, now: datetime | None = None) -> int:
    """Post expiry for what remains of lots past `expires_at` (the beat task), one account at a
    time. Returns how many accounts were processed."""
    now = now or timezone.now()
    account_ids = (
        CreditLot.objects.filter(remaining__gt=0, expires_at__lte=now)
        .values_list("account_id", flat=True).distinct()
    )
    count = 0
    for account in LedgerAccount.objects.filter(pk__in=list(account_ids)).order_by("pk"):
        with transaction.atomic():
            _expire_due(_lock([account])[account.pk], now)
            count += 1
    return count


# Reversals --------------------------------------------------------------------------------------


@transaction.atomic
def ledger_reverse(*, txn: LedgerTransaction, idempotency_key: str | None = None,
                   memo: str = "", actor: Actor) -> LedgerTransaction:
    """Post the mirror image of `txn` (entries never change): every entry negated, burned lot
    portions given back to their lots, created portions taken out of theirs.

    Raises Conflict (already reversed, or a reversal), InsufficientCredits (the credits were
    spent since), IdempotencyConflict."""
    organization = txn.organization
    key = idempotency_key or f"reverse:{txn.pk}"
    digest = request_hash(op="reverse", txn=txn.pk)
    existing = _first_result(LedgerTransaction, organization, key, digest)
    if existing is not None:
        return existing
    entries = list(txn.entries.select_related("account", "lot"))
    locked = _lock([e.account for e in entries])
    if txn.kind == LedgerTransaction.Kind.REVERSAL:
        raise Conflict("A reversal is not reversed; post a new transaction.", reason="reversal")
    if LedgerTransaction.objects.filter(reverses=txn).exists():
        raise Conflict("This transaction is reversed already.", reason="already_reversed")
    reversal, _ = _create_once(
        LedgerTransaction, organization, key, digest, kind=LedgerTransaction.Kind.REVERSAL,
        reverses=txn, memo=memo[:500], created_by=actor.user,
    )
    legs = [(locked.get(e.account_id, e.account), -e.amount, e.lot) for e in entries]
    taken: dict[int, Decimal] = defaultdict(Decimal)
    for account, amount, _ in legs:
        if amount < 0 and not account.may_overdraw:
            taken[account.pk] += -amount
    for pk, amount in taken.items():
        _ensure_available(locked[pk], amount)
    for entry in entries:
        if entry.lot is None:
            continue
        lot = CreditLot.objects.get(pk=entry.lot_id)
        if lot.remaining < entry.amount:
            raise InsufficientCredits(
                f"Insufficient credits: the {format_credits(entry.amount)} credits of lot "
                f"#{lot.pk} were spent or moved since.",
                needed=str(entry.amount), available=str(lot.remaining),
            )
        lot.remaining -= entry.amount
        lot.save(update_fields=["remaining"])
    _post_entries(reversal, legs)
    audit_record(organization=organization, actor=actor, action="ledger.reversed",
                 target=txn, after={"reversal": reversal.pk, "kind": txn.kind})
    return reversal
